//! `$(VAR)` expansion in env values, command and args: a port of Kubernetes'
//! `third_party/forked/golang/expansion/expand.go` (and its `expand_test.go` cases below).
//! `$$` escapes the operator, an undefined or unterminated reference is kept verbatim,
//! shell syntax (`$VAR`, `${VAR}`) is left alone.

const OPERATOR: u8 = b'$';
const REFERENCE_OPENER: u8 = b'(';
const REFERENCE_CLOSER: u8 = b')';

/// `$(input)`: what an unresolved reference expands to.
fn syntax_wrap(input: &str) -> String {
    format!("$({input})")
}

/// Upstream `MappingFuncFor`: look the name up in each context in turn; unresolved
/// references stay as written.
pub fn mapping_func_for<'a, C>(contexts: &'a [&'a C]) -> impl Fn(&str) -> String + 'a
where
    C: Lookup + ?Sized,
{
    move |input: &str| {
        for context in contexts {
            if let Some(value) = context.lookup(input) {
                return value.to_string();
            }
        }
        syntax_wrap(input)
    }
}

/// A variable context: a map, or an ordered list of pairs.
pub trait Lookup {
    fn lookup(&self, name: &str) -> Option<&str>;
}

impl Lookup for std::collections::HashMap<String, String> {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.get(name).map(String::as_str)
    }
}

impl Lookup for std::collections::BTreeMap<String, String> {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.get(name).map(String::as_str)
    }
}

impl Lookup for [(String, String)] {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Upstream `Expand`: replaces `$(NAME)` references in `input` through `mapping`.
pub fn expand(input: &str, mapping: impl Fn(&str) -> String) -> String {
    let bytes = input.as_bytes();
    let mut buf: Vec<u8> = Vec::with_capacity(bytes.len());
    let mut checkpoint = 0;
    let mut cursor = 0;
    while cursor < bytes.len() {
        if bytes[cursor] == OPERATOR && cursor + 1 < bytes.len() {
            // Copy the portion of the input since the last checkpoint.
            buf.extend_from_slice(&bytes[checkpoint..cursor]);
            // Attempt to read a variable name as defined by the syntax.
            let (read, is_var, advance) = try_read_variable_name(&bytes[cursor + 1..]);
            if is_var {
                // A variable name: apply the mapping.
                let name = std::str::from_utf8(read).expect("a slice between ASCII delimiters");
                buf.extend_from_slice(mapping(name).as_bytes());
            } else {
                // Not a variable name: copy the bytes read.
                buf.extend_from_slice(read);
            }
            cursor += advance;
            checkpoint = cursor + 1;
        }
        cursor += 1;
    }
    buf.extend_from_slice(&bytes[checkpoint.min(bytes.len())..]);
    // Only whole UTF-8 sequences were copied: the delimiters are ASCII.
    String::from_utf8(buf).expect("expansion keeps UTF-8 intact")
}

/// Upstream `tryReadVariableName`: what was read (with the operator when it is not a
/// reference), whether it is a variable name, and how many bytes were consumed after the
/// operator. The input does not contain the initial operator.
fn try_read_variable_name(input: &[u8]) -> (&[u8], bool, usize) {
    match input[0] {
        // Escaped operator: return it.
        OPERATOR => (&input[0..1], false, 1),
        REFERENCE_OPENER => {
            // Scan to the expression closer.
            match input[1..].iter().position(|&b| b == REFERENCE_CLOSER) {
                Some(i) => (&input[1..i + 1], true, i + 2),
                // Incomplete reference: return "$(".
                None => (b"$(", false, 1),
            }
        }
        // Not the beginning of an expression: return the operator and the first byte
        // (upstream returns the operator and the first rune; the rest of a multi-byte
        // rune is copied from the checkpoint, with the same result).
        _ => {
            if input[0].is_ascii() {
                (ascii_pair(input[0]), false, 1)
            } else {
                (b"$", false, 0)
            }
        }
    }
}

/// `$` followed by one ASCII byte, as a static slice.
fn ascii_pair(b: u8) -> &'static [u8] {
    static PAIRS: [[u8; 2]; 128] = {
        let mut pairs = [[0u8; 2]; 128];
        let mut i = 0;
        while i < 128 {
            pairs[i] = [b'$', i as u8];
            i += 1;
        }
        pairs
    };
    &PAIRS[b as usize]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    // Upstream TestMapReference: declared env vars reference earlier ones.
    #[test]
    fn map_reference() {
        let envs = [("FOO", "bar"), ("ZOO", "$(FOO)-1"), ("BLU", "$(ZOO)-2")];
        let mut declared = map(&envs);
        let service = HashMap::new();
        for (name, value) in envs {
            let expanded = {
                let contexts: [&HashMap<String, String>; 2] = [&declared, &service];
                expand(value, mapping_func_for(&contexts))
            };
            declared.insert(name.to_string(), expanded);
        }
        assert_eq!(
            declared,
            map(&[("FOO", "bar"), ("ZOO", "bar-1"), ("BLU", "bar-1-2")])
        );
    }

    #[test]
    fn mapping() {
        let context = map(&[
            ("VAR_A", "A"),
            ("VAR_B", "B"),
            ("VAR_C", "C"),
            ("VAR_REF", "$(VAR_A)"),
            ("VAR_EMPTY", ""),
        ]);
        let contexts = [&context];
        do_expansion_test(mapping_func_for(&contexts));
    }

    #[test]
    fn mapping_dual() {
        let context = map(&[("VAR_A", "A"), ("VAR_EMPTY", "")]);
        let context2 = map(&[("VAR_B", "B"), ("VAR_C", "C"), ("VAR_REF", "$(VAR_A)")]);
        let contexts = [&context, &context2];
        do_expansion_test(mapping_func_for(&contexts));
    }

    #[test]
    fn ordered_pairs_take_the_last_definition() {
        let pairs: Vec<(String, String)> = vec![("A".into(), "1".into()), ("A".into(), "2".into())];
        let contexts: [&[(String, String)]; 1] = [&pairs];
        assert_eq!(expand("$(A)", mapping_func_for(&contexts)), "2");
    }

    #[test]
    fn non_ascii_text_is_kept() {
        let context = map(&[("V", "é")]);
        let contexts = [&context];
        let f = mapping_func_for(&contexts);
        assert_eq!(expand("ü$(V)$ü$", &f), "üé$ü$");
        assert_eq!(expand("$é", &f), "$é");
    }

    fn do_expansion_test(mapping: impl Fn(&str) -> String) {
        let cases = [
            ("whole string", "$(VAR_A)", "A"),
            ("repeat", "$(VAR_A)-$(VAR_A)", "A-A"),
            ("beginning", "$(VAR_A)-1", "A-1"),
            ("middle", "___$(VAR_B)___", "___B___"),
            ("end", "___$(VAR_C)", "___C"),
            ("compound", "$(VAR_A)_$(VAR_B)_$(VAR_C)", "A_B_C"),
            ("escape & expand", "$$(VAR_B)_$(VAR_A)", "$(VAR_B)_A"),
            (
                "compound escape",
                "$$(VAR_A)_$$(VAR_B)",
                "$(VAR_A)_$(VAR_B)",
            ),
            ("mixed in escapes", "f000-$$VAR_A", "f000-$VAR_A"),
            ("backslash escape ignored", "foo\\$(VAR_C)bar", "foo\\Cbar"),
            (
                "backslash escape ignored",
                "foo\\\\$(VAR_C)bar",
                "foo\\\\Cbar",
            ),
            (
                "lots of backslashes",
                "foo\\\\\\\\$(VAR_A)bar",
                "foo\\\\\\\\Abar",
            ),
            (
                "nested var references",
                "$(VAR_A$(VAR_B))",
                "$(VAR_A$(VAR_B))",
            ),
            (
                "nested var references second type",
                "$(VAR_A$(VAR_B)",
                "$(VAR_A$(VAR_B)",
            ),
            ("value is a reference", "$(VAR_REF)", "$(VAR_A)"),
            (
                "value is a reference x 2",
                "%%$(VAR_REF)--$(VAR_REF)%%",
                "%%$(VAR_A)--$(VAR_A)%%",
            ),
            ("empty var", "foo$(VAR_EMPTY)bar", "foobar"),
            (
                "unterminated expression",
                "foo$(VAR_Awhoops!",
                "foo$(VAR_Awhoops!",
            ),
            (
                "expression without operator",
                "f00__(VAR_A)__",
                "f00__(VAR_A)__",
            ),
            ("shell special vars pass through", "$?_boo_$!", "$?_boo_$!"),
            ("bare operators are ignored", "$VAR_A", "$VAR_A"),
            (
                "undefined vars are passed through",
                "$(VAR_DNE)",
                "$(VAR_DNE)",
            ),
            (
                "multiple (even) operators, var undefined",
                "$$$$$$(BIG_MONEY)",
                "$$$(BIG_MONEY)",
            ),
            (
                "multiple (even) operators, var defined",
                "$$$$$$(VAR_A)",
                "$$$(VAR_A)",
            ),
            (
                "multiple (odd) operators, var undefined",
                "$$$$$$$(GOOD_ODDS)",
                "$$$$(GOOD_ODDS)",
            ),
            (
                "multiple (odd) operators, var defined",
                "$$$$$$$(VAR_A)",
                "$$$A",
            ),
            ("missing open expression", "$VAR_A)", "$VAR_A)"),
            ("shell syntax ignored", "${VAR_A}", "${VAR_A}"),
            (
                "trailing incomplete expression not consumed",
                "$(VAR_B)_______$(A",
                "B_______$(A",
            ),
            (
                "trailing incomplete expression, no content, is not consumed",
                "$(VAR_C)_______$(",
                "C_______$(",
            ),
            (
                "operator at end of input string is preserved",
                "$(VAR_A)foobarzab$",
                "Afoobarzab$",
            ),
            (
                "shell escaped incomplete expr",
                "foo-\\$(VAR_A",
                "foo-\\$(VAR_A",
            ),
            ("lots of $( in middle", "--$($($($($--", "--$($($($($--"),
            (
                "lots of $( in beginning",
                "$($($($($--foo$(",
                "$($($($($--foo$(",
            ),
            ("lots of $( at end", "foo0--$($($($(", "foo0--$($($($("),
            (
                "escaped operators in variable names are not escaped",
                "$(foo$$var)",
                "$(foo$$var)",
            ),
            ("newline not expanded", "\n", "\n"),
        ];
        for (name, input, expected) in cases {
            assert_eq!(expand(input, &mapping), expected, "{name}: {input:?}");
        }
    }
}
