//! Pure: the cgroup v2 device filter, an eBPF program of type
//! `BPF_PROG_TYPE_CGROUP_DEVICE` built from the same allow rules v1 writes to
//! `devices.allow`. A port of runc's `libcontainer/cgroups/devices/devicefilter.go`
//! (youki's `libcgroups/src/v2/devices/program.rs` builds the same program): the context
//! (`struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor; }`) is loaded into
//! r2 (device type), r3 (access), r4 (major) and r5 (minor), then one block per rule jumps
//! to the next block unless the device matches, and returns the rule's verdict; the last
//! block returns the default (deny in allowlist mode).
//!
//! The rules are what [`super::cgroups::Resources::devices`] holds: after an implicit
//! deny-all, each `"<type> <major>:<minor> <access>"` is allowed (`*` a wildcard), and
//! `"a"` allows every device. As runc's emulator does, rules for the same device are
//! merged and the blocks are sorted by type, major and minor (wildcards first).
//! [`render`] prints the program as runc's `asm.Instructions.String()` does, so the tests
//! compare against runc's own expected listings (`devicefilter_test.go`).

use std::collections::BTreeMap;

/// Errors in a device rule.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DeviceFilterError {
    #[error("invalid device rule {rule:?}: {message}")]
    InvalidRule { rule: String, message: String },
}

/// `BPF_DEVCG_DEV_BLOCK` / `BPF_DEVCG_DEV_CHAR`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum DeviceType {
    Block = 1,
    Char = 2,
}

/// `BPF_DEVCG_ACC_MKNOD`, `_READ`, `_WRITE`.
pub const ACC_MKNOD: i32 = 1;
pub const ACC_READ: i32 = 2;
pub const ACC_WRITE: i32 = 4;

/// One allow rule: type, major and minor (`None`: any), access bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceRule {
    pub kind: DeviceType,
    pub major: Option<u32>,
    pub minor: Option<u32>,
    pub access: i32,
}

/// The parsed rules: every device allowed, or only the listed ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceRules {
    AllowAll,
    Allow(Vec<DeviceRule>),
}

fn number(rule: &str, s: &str) -> Result<Option<u32>, DeviceFilterError> {
    if s == "*" {
        return Ok(None);
    }
    s.parse::<u32>()
        .map(Some)
        .map_err(|_| DeviceFilterError::InvalidRule {
            rule: rule.to_string(),
            message: format!("{s:?} is not a device number or *"),
        })
}

/// Parses the v1 `devices.allow` strings (`"c 1:3 rwm"`, `"b *:* m"`, `"a"`).
pub fn parse_rules(rules: &[String]) -> Result<DeviceRules, DeviceFilterError> {
    let mut out = Vec::new();
    for rule in rules {
        let bad = |message: &str| DeviceFilterError::InvalidRule {
            rule: rule.clone(),
            message: message.to_string(),
        };
        let fields: Vec<&str> = rule.split_whitespace().collect();
        if fields.first() == Some(&"a") {
            // "a" alone, or "a *:* rwm": every device.
            return Ok(DeviceRules::AllowAll);
        }
        let [kind, numbers, access] = fields[..] else {
            return Err(bad("expected \"<a|b|c> <major>:<minor> <rwm>\""));
        };
        let kind = match kind {
            "b" => DeviceType::Block,
            "c" => DeviceType::Char,
            _ => return Err(bad("the type must be a, b or c")),
        };
        let (major, minor) = numbers
            .split_once(':')
            .ok_or_else(|| bad("expected <major>:<minor>"))?;
        let mut bits = 0;
        for c in access.chars() {
            bits |= match c {
                'r' => ACC_READ,
                'w' => ACC_WRITE,
                'm' => ACC_MKNOD,
                _ => return Err(bad("the access must be made of r, w and m")),
            };
        }
        if bits == 0 {
            return Err(bad("empty access"));
        }
        out.push(DeviceRule {
            kind,
            major: number(rule, major)?,
            minor: number(rule, minor)?,
            access: bits,
        });
    }
    Ok(DeviceRules::Allow(out))
}

/// One eBPF instruction, with a symbolic jump target (a block number) until encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    pub op: Op,
    pub dst: u8,
    pub src: u8,
    pub off: i16,
    pub imm: i32,
    /// The block this jump goes to (`off` is computed by [`encode`]).
    pub target: Option<usize>,
}

/// The instructions the device filter uses (runc's `asm` names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `BPF_LDX | BPF_MEM | BPF_W`
    LdXMemW,
    /// `BPF_ALU | BPF_AND | BPF_K`
    AndImm32,
    /// `BPF_ALU | BPF_RSH | BPF_K`
    RShImm32,
    /// `BPF_ALU | BPF_MOV | BPF_X`
    MovReg32,
    /// `BPF_ALU | BPF_MOV | BPF_K`
    MovImm32,
    /// `BPF_JMP | BPF_JNE | BPF_K`
    JNEImm,
    /// `BPF_JMP | BPF_JNE | BPF_X`
    JNEReg,
    /// `BPF_JMP | BPF_EXIT`
    Exit,
}

impl Op {
    pub fn code(self) -> u8 {
        match self {
            Op::LdXMemW => 0x61,
            Op::AndImm32 => 0x54,
            Op::RShImm32 => 0x74,
            Op::MovReg32 => 0xbc,
            Op::MovImm32 => 0xb4,
            Op::JNEImm => 0x55,
            Op::JNEReg => 0x5d,
            Op::Exit => 0x95,
        }
    }
}

fn insn(op: Op, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        op,
        dst,
        src,
        off,
        imm,
        target: None,
    }
}

fn jump(op: Op, dst: u8, src: u8, imm: i32, block: usize) -> Insn {
    Insn {
        target: Some(block),
        ..insn(op, dst, src, -1, imm)
    }
}

/// The program: instructions and the index where each block starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Program {
    pub insns: Vec<Insn>,
    pub blocks: Vec<usize>,
}

/// runc's `DeviceFilter` for `rules`.
pub fn device_filter(rules: &DeviceRules) -> Program {
    // Load the context: r2 = type (low 16 bits of access_type), r3 = access (high 16
    // bits), r4 = major, r5 = minor.
    let mut insns = vec![
        insn(Op::LdXMemW, 2, 1, 0, 0),
        insn(Op::AndImm32, 2, 0, 0, 0xFFFF),
        insn(Op::LdXMemW, 3, 1, 0, 0),
        insn(Op::RShImm32, 3, 0, 0, 16),
        insn(Op::LdXMemW, 4, 1, 4, 0),
        insn(Op::LdXMemW, 5, 1, 8, 0),
    ];
    let mut blocks = Vec::new();
    let default_allow = matches!(rules, DeviceRules::AllowAll);
    if let DeviceRules::Allow(list) = rules {
        // The emulator's clean list: one entry per device, accesses merged, sorted with
        // wildcards (runc's -1) first.
        let mut merged: BTreeMap<(DeviceType, i64, i64), i32> = BTreeMap::new();
        for r in list {
            let key = (
                r.kind,
                r.major.map_or(-1, i64::from),
                r.minor.map_or(-1, i64::from),
            );
            *merged.entry(key).or_default() |= r.access;
        }
        for ((kind, major, minor), access) in merged {
            let id = blocks.len();
            let next = id + 1;
            blocks.push(insns.len());
            insns.push(jump(Op::JNEImm, 2, 0, kind as i32, next));
            if access != ACC_READ | ACC_WRITE | ACC_MKNOD {
                // if (r3 & access) != r3: the request asks for more than the rule allows.
                insns.push(insn(Op::MovReg32, 1, 3, 0, 0));
                insns.push(insn(Op::AndImm32, 1, 0, 0, access));
                insns.push(jump(Op::JNEReg, 1, 3, 0, next));
            }
            if major >= 0 {
                insns.push(jump(Op::JNEImm, 4, 0, major as i32, next));
            }
            if minor >= 0 {
                insns.push(jump(Op::JNEImm, 5, 0, minor as i32, next));
            }
            insns.push(insn(Op::MovImm32, 0, 0, 0, 1));
            insns.push(insn(Op::Exit, 0, 0, 0, 0));
        }
    }
    blocks.push(insns.len());
    insns.push(insn(Op::MovImm32, 0, 0, 0, i32::from(default_allow)));
    insns.push(insn(Op::Exit, 0, 0, 0, 0));
    Program { insns, blocks }
}

/// The program as `struct bpf_insn`s (8 bytes each: code, dst | src << 4, off, imm),
/// with each jump's offset resolved to its block.
pub fn encode(p: &Program) -> Vec<u64> {
    p.insns
        .iter()
        .enumerate()
        .map(|(pc, i)| {
            let off = match i.target {
                Some(b) => (p.blocks[b] as i64 - pc as i64 - 1) as i16,
                None => i.off,
            };
            let mut bytes = [0u8; 8];
            bytes[0] = i.op.code();
            bytes[1] = (i.dst & 0x0f) | (i.src << 4);
            bytes[2..4].copy_from_slice(&off.to_ne_bytes());
            bytes[4..8].copy_from_slice(&i.imm.to_ne_bytes());
            u64::from_ne_bytes(bytes)
        })
        .collect()
}

/// The listing runc's `asm.Instructions.String()` prints (blocks labelled `block-N:`,
/// jumps with `off: -1` and their `<block-N>` symbol).
pub fn render(p: &Program) -> String {
    let mut out = String::new();
    for (pc, i) in p.insns.iter().enumerate() {
        if let Some(b) = p.blocks.iter().position(|&s| s == pc) {
            out.push_str(&format!("block-{b}:\n"));
        }
        let body = match i.op {
            Op::LdXMemW => format!(
                "LdXMemW dst: r{} src: r{} off: {} imm: {}",
                i.dst, i.src, i.off, i.imm
            ),
            Op::AndImm32 | Op::RShImm32 | Op::MovImm32 => {
                format!("{:?} dst: r{} imm: {}", i.op, i.dst, i.imm)
            }
            Op::MovReg32 => format!("MovReg32 dst: r{} src: r{}", i.dst, i.src),
            Op::JNEImm => format!(
                "JNEImm dst: r{} off: {} imm: {} <block-{}>",
                i.dst,
                i.off,
                i.imm,
                i.target.unwrap_or_default()
            ),
            Op::JNEReg => format!(
                "JNEReg dst: r{} off: {} src: r{} <block-{}>",
                i.dst,
                i.off,
                i.src,
                i.target.unwrap_or_default()
            ),
            Op::Exit => "Exit".to_string(),
        };
        out.push_str(&format!("{pc}: {body}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::cgroups::{DEFAULT_ALLOWED_DEVICES, container_device_rules};

    /// runc's test helper `hash`: trimmed lines, comments and blank lines dropped.
    fn hash(s: &str) -> String {
        s.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn listing(rules: &[&str]) -> String {
        let rules: Vec<String> = rules.iter().map(|s| s.to_string()).collect();
        hash(&render(&device_filter(&parse_rules(&rules).unwrap())))
    }

    const PROLOGUE: &str = "
        0: LdXMemW dst: r2 src: r1 off: 0 imm: 0
        1: AndImm32 dst: r2 imm: 65535
        2: LdXMemW dst: r3 src: r1 off: 0 imm: 0
        3: RShImm32 dst: r3 imm: 16
        4: LdXMemW dst: r4 src: r1 off: 4 imm: 0
        5: LdXMemW dst: r5 src: r1 off: 8 imm: 0";

    /// runc's TestDeviceFilter_Nil.
    #[test]
    fn nil_rules_reject_everything() {
        let expected = format!(
            "{PROLOGUE}
block-0:
// return 0 (reject)
        6: MovImm32 dst: r0 imm: 0
        7: Exit"
        );
        assert_eq!(listing(&[]), hash(&expected));
    }

    /// runc's TestDeviceFilter_Privileged.
    #[test]
    fn privileged_accepts_everything() {
        let expected = format!(
            "{PROLOGUE}
block-0:
        6: MovImm32 dst: r0 imm: 1
        7: Exit"
        );
        assert_eq!(listing(&["a"]), hash(&expected));
        assert_eq!(listing(&["a *:* rwm"]), hash(&expected));
        let privileged = container_device_rules(true, &[]);
        assert_eq!(
            hash(&render(&device_filter(&parse_rules(&privileged).unwrap())))
                .lines()
                .count(),
            9
        );
    }

    /// runc's TestDeviceFilter_BuiltInAllowList: runc's AllowedDevices (with the tuntap
    /// rule runc dropped in 1.2), listed in runc's order, gives runc's listing.
    #[test]
    fn runc_built_in_allow_list() {
        let rules = [
            "c *:* m",
            "b *:* m",
            "c 1:3 rwm",
            "c 1:8 rwm",
            "c 1:7 rwm",
            "c 5:0 rwm",
            "c 1:5 rwm",
            "c 1:9 rwm",
            "c 136:* rwm",
            "c 5:2 rwm",
            "c 10:200 rwm",
        ];
        let expected = format!(
            "{PROLOGUE}
block-0:
// (b, wildcard, wildcard, m, true)
        6: JNEImm dst: r2 off: -1 imm: 1 <block-1>
        7: MovReg32 dst: r1 src: r3
        8: AndImm32 dst: r1 imm: 1
        9: JNEReg dst: r1 off: -1 src: r3 <block-1>
        10: MovImm32 dst: r0 imm: 1
        11: Exit
block-1:
// (c, wildcard, wildcard, m, true)
        12: JNEImm dst: r2 off: -1 imm: 2 <block-2>
        13: MovReg32 dst: r1 src: r3
        14: AndImm32 dst: r1 imm: 1
        15: JNEReg dst: r1 off: -1 src: r3 <block-2>
        16: MovImm32 dst: r0 imm: 1
        17: Exit
block-2:
        18: JNEImm dst: r2 off: -1 imm: 2 <block-3>
        19: JNEImm dst: r4 off: -1 imm: 1 <block-3>
        20: JNEImm dst: r5 off: -1 imm: 3 <block-3>
        21: MovImm32 dst: r0 imm: 1
        22: Exit
block-3:
        23: JNEImm dst: r2 off: -1 imm: 2 <block-4>
        24: JNEImm dst: r4 off: -1 imm: 1 <block-4>
        25: JNEImm dst: r5 off: -1 imm: 5 <block-4>
        26: MovImm32 dst: r0 imm: 1
        27: Exit
block-4:
        28: JNEImm dst: r2 off: -1 imm: 2 <block-5>
        29: JNEImm dst: r4 off: -1 imm: 1 <block-5>
        30: JNEImm dst: r5 off: -1 imm: 7 <block-5>
        31: MovImm32 dst: r0 imm: 1
        32: Exit
block-5:
        33: JNEImm dst: r2 off: -1 imm: 2 <block-6>
        34: JNEImm dst: r4 off: -1 imm: 1 <block-6>
        35: JNEImm dst: r5 off: -1 imm: 8 <block-6>
        36: MovImm32 dst: r0 imm: 1
        37: Exit
block-6:
        38: JNEImm dst: r2 off: -1 imm: 2 <block-7>
        39: JNEImm dst: r4 off: -1 imm: 1 <block-7>
        40: JNEImm dst: r5 off: -1 imm: 9 <block-7>
        41: MovImm32 dst: r0 imm: 1
        42: Exit
block-7:
        43: JNEImm dst: r2 off: -1 imm: 2 <block-8>
        44: JNEImm dst: r4 off: -1 imm: 5 <block-8>
        45: JNEImm dst: r5 off: -1 imm: 0 <block-8>
        46: MovImm32 dst: r0 imm: 1
        47: Exit
block-8:
        48: JNEImm dst: r2 off: -1 imm: 2 <block-9>
        49: JNEImm dst: r4 off: -1 imm: 5 <block-9>
        50: JNEImm dst: r5 off: -1 imm: 2 <block-9>
        51: MovImm32 dst: r0 imm: 1
        52: Exit
block-9:
// tuntap (c, 10, 200, rwm, true)
        53: JNEImm dst: r2 off: -1 imm: 2 <block-10>
        54: JNEImm dst: r4 off: -1 imm: 10 <block-10>
        55: JNEImm dst: r5 off: -1 imm: 200 <block-10>
        56: MovImm32 dst: r0 imm: 1
        57: Exit
block-10:
// /dev/pts (c, 136, wildcard, rwm, true)
        58: JNEImm dst: r2 off: -1 imm: 2 <block-11>
        59: JNEImm dst: r4 off: -1 imm: 136 <block-11>
        60: MovImm32 dst: r0 imm: 1
        61: Exit
block-11:
        62: MovImm32 dst: r0 imm: 0
        63: Exit"
        );
        assert_eq!(listing(&rules), hash(&expected));
    }

    #[test]
    fn same_device_rules_merge() {
        let expected = format!(
            "{PROLOGUE}
block-0:
        6: JNEImm dst: r2 off: -1 imm: 2 <block-1>
        7: JNEImm dst: r4 off: -1 imm: 1 <block-1>
        8: JNEImm dst: r5 off: -1 imm: 3 <block-1>
        9: MovImm32 dst: r0 imm: 1
        10: Exit
block-1:
        11: MovImm32 dst: r0 imm: 0
        12: Exit"
        );
        assert_eq!(listing(&["c 1:3 r", "c 1:3 wm"]), hash(&expected));
    }

    #[test]
    fn jumps_are_encoded_to_their_block() {
        let rules: Vec<String> = DEFAULT_ALLOWED_DEVICES
            .iter()
            .map(|s| s.to_string())
            .collect();
        let p = device_filter(&parse_rules(&rules).unwrap());
        let raw = encode(&p);
        assert_eq!(raw.len(), p.insns.len());
        for (pc, (i, word)) in p.insns.iter().zip(&raw).enumerate() {
            let bytes = word.to_ne_bytes();
            assert_eq!(bytes[0], i.op.code());
            let off = i16::from_ne_bytes([bytes[2], bytes[3]]);
            match i.target {
                Some(b) => {
                    assert_eq!(pc as i64 + 1 + off as i64, p.blocks[b] as i64, "pc {pc}")
                }
                None => assert_eq!(off, i.off),
            }
        }
        // The first instruction: ldxw r2, [r1+0].
        assert_eq!(raw[0].to_ne_bytes(), [0x61, 0x12, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn bad_rules_are_refused() {
        for (rule, message) in [
            ("x 1:3 rwm", "the type must be a, b or c"),
            ("c 1:3", "expected \"<a|b|c> <major>:<minor> <rwm>\""),
            ("c 1-3 rwm", "expected <major>:<minor>"),
            ("c 1:3 rwx", "the access must be made of r, w and m"),
            ("c one:3 rwm", "\"one\" is not a device number or *"),
        ] {
            assert_eq!(
                parse_rules(&[rule.to_string()]),
                Err(DeviceFilterError::InvalidRule {
                    rule: rule.into(),
                    message: message.into()
                }),
                "{rule}"
            );
        }
    }
}
