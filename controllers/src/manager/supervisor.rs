//! The tasks that must run for the life of the process (each informer's watch, each
//! controller) and the first of them to stop. kube-controller-manager's goroutines take
//! the process down when they panic; here a stopped or panicked task is reported to
//! `/healthz` and the manager exits, so nothing keeps running on a cache that no longer
//! updates.
use tokio::task::JoinHandle;

pub struct Task {
    pub name: String,
    pub handle: JoinHandle<()>,
}

impl Task {
    pub fn spawn(
        name: impl Into<String>,
        fut: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Self {
        Task {
            name: name.into(),
            handle: tokio::spawn(fut),
        }
    }
}

/// Waits for the first task to end and says which, and how: `"informer pods stopped"`,
/// `"controller scheduler panicked: <message>"`. Never returns while every task runs; with
/// no task at all it never returns.
pub async fn first_to_stop(tasks: &mut [Task]) -> String {
    if tasks.is_empty() {
        return std::future::pending().await;
    }
    let (result, index, _) =
        futures::future::select_all(tasks.iter_mut().map(|t| &mut t.handle)).await;
    let name = &tasks[index].name;
    match result {
        Ok(()) => format!("{name} stopped"),
        Err(e) if e.is_panic() => {
            let payload = e.into_panic();
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "(no message)".into());
            format!("{name} panicked: {message}")
        }
        Err(_) => format!("{name} was cancelled"),
    }
}

/// Stops every task that is still running (at shutdown, after the controllers drained).
pub fn abort_all(tasks: &[Task]) {
    tasks.iter().for_each(|t| t.handle.abort());
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_panicking_task_is_named_with_its_message() {
        let mut tasks = vec![
            Task::spawn("informer pods", std::future::pending()),
            Task::spawn("controller replicaset-controller", async {
                tokio::time::sleep(Duration::from_millis(10)).await;
                panic!("index out of bounds");
            }),
        ];
        assert_eq!(
            first_to_stop(&mut tasks).await,
            "controller replicaset-controller panicked: index out of bounds"
        );
        abort_all(&tasks);
    }

    #[tokio::test]
    async fn a_task_that_returns_is_a_stop_too() {
        let mut tasks = vec![
            Task::spawn("controller scheduler", std::future::pending()),
            Task::spawn("informer nodes", async {}),
        ];
        assert_eq!(first_to_stop(&mut tasks).await, "informer nodes stopped");
        abort_all(&tasks);
    }

    #[tokio::test]
    async fn nothing_is_reported_while_every_task_runs() {
        let mut tasks = vec![Task::spawn("informer pods", std::future::pending())];
        let waited =
            tokio::time::timeout(Duration::from_millis(50), first_to_stop(&mut tasks)).await;
        assert!(waited.is_err(), "reported {waited:?}");
        abort_all(&tasks);
    }
}
