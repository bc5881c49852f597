//! cgroup v2 device control: the `BPF_PROG_TYPE_CGROUP_DEVICE` program that allows exactly
//! what a device allowlist allows (the same rules v1 writes into devices.allow) and denies
//! every other char and block device, and attaching it to a container's cgroup.
//!
//! [`program`] is pure data (the instruction sequence for a rule list), tested without root by
//! running it in a small interpreter; [`attach`] is the one place that loads and attaches it.
//! The kernel detaches the program when the cgroup is removed.

use std::ffi::CStr;
use std::os::fd::AsFd;
use std::path::Path;

use super::error::CgroupError;
use super::limits::{DeviceAccess, DeviceKind, DeviceRule};
use crate::sys::bpf::{self, Insn};

/// What to do where the kernel cannot run a device program (no BPF, or no permission for it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DeviceControl {
    /// Refuse to create the cgroup: no container runs without device control.
    #[default]
    Required,
    /// Warn and go on without device control (the config's `device_control = "best-effort"`).
    BestEffort,
}

// Opcodes (linux/bpf_common.h, linux/bpf.h) of the instructions `program` emits.
/// `dst = *(u32 *)(src + off)`
pub const LDX_MEM_W: u8 = 0x61;
/// `dst &= imm` (32-bit)
pub const ALU_AND_K: u8 = 0x54;
/// `dst >>= imm` (32-bit)
pub const ALU_RSH_K: u8 = 0x74;
/// `dst = src` (64-bit)
pub const MOV64_X: u8 = 0xbf;
/// `dst = imm` (64-bit)
pub const MOV64_K: u8 = 0xb7;
/// `if dst != imm goto pc + 1 + off`
pub const JNE_K: u8 = 0x55;
/// `if dst != src goto pc + 1 + off`
pub const JNE_X: u8 = 0x5d;
/// `return r0`
pub const EXIT: u8 = 0x95;

// struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor; }, where access_type is
// (access << 16) | type.
const CTX_ACCESS_TYPE: i16 = 0;
const CTX_MAJOR: i16 = 4;
const CTX_MINOR: i16 = 8;
const DEV_BLOCK: i32 = 1;
const DEV_CHAR: i32 = 2;

// Registers: r1 holds the context on entry, then serves as scratch; r2 the device type, r3 the
// requested access, r4 the major, r5 the minor, r0 the verdict.
const R0: u8 = 0;
const R1: u8 = 1;
const R_TYPE: u8 = 2;
const R_ACCESS: u8 = 3;
const R_MAJOR: u8 = 4;
const R_MINOR: u8 = 5;

/// The device program for `rules`: 1 (allow) when some rule permits the request, else 0.
pub fn program(rules: &[DeviceRule]) -> Vec<Insn> {
    let mut p = vec![
        Insn::new(LDX_MEM_W, R_TYPE, R1, CTX_ACCESS_TYPE, 0),
        Insn::new(ALU_AND_K, R_TYPE, 0, 0, 0xffff),
        Insn::new(LDX_MEM_W, R_ACCESS, R1, CTX_ACCESS_TYPE, 0),
        Insn::new(ALU_RSH_K, R_ACCESS, 0, 0, 16),
        Insn::new(LDX_MEM_W, R_MAJOR, R1, CTX_MAJOR, 0),
        Insn::new(LDX_MEM_W, R_MINOR, R1, CTX_MINOR, 0),
    ];
    for rule in rules {
        p.extend(rule_block(rule));
    }
    p.push(Insn::new(MOV64_K, R0, 0, 0, 0));
    p.push(Insn::new(EXIT, 0, 0, 0, 0));
    p
}

/// One rule: a chain of tests, each jumping past the block when it fails, then "return 1".
fn rule_block(rule: &DeviceRule) -> Vec<Insn> {
    // Tests whose `off` is patched to the end of the block once its length is known.
    let mut tests: Vec<Insn> = Vec::new();
    let kind = match rule.kind {
        DeviceKind::Block => DEV_BLOCK,
        DeviceKind::Char => DEV_CHAR,
    };
    tests.push(Insn::new(JNE_K, R_TYPE, 0, 0, kind));
    let allowed = DeviceAccess::bits(rule.access);
    if allowed != DeviceAccess::ALL {
        // Every requested bit must be allowed: (access & allowed) == access.
        tests.push(Insn::new(MOV64_X, R1, R_ACCESS, 0, 0));
        tests.push(Insn::new(ALU_AND_K, R1, 0, 0, allowed as i32));
        tests.push(Insn::new(JNE_X, R1, R_ACCESS, 0, 0));
    }
    if let Some(major) = rule.major {
        tests.push(Insn::new(JNE_K, R_MAJOR, 0, 0, major as i32));
    }
    if let Some(minor) = rule.minor {
        tests.push(Insn::new(JNE_K, R_MINOR, 0, 0, minor as i32));
    }
    tests.push(Insn::new(MOV64_K, R0, 0, 0, 1));
    tests.push(Insn::new(EXIT, 0, 0, 0, 0));
    let len = tests.len();
    for (i, insn) in tests.iter_mut().enumerate() {
        if matches!(insn.code, JNE_K | JNE_X) {
            insn.off = (len - i - 1) as i16;
        }
    }
    tests
}

const LICENSE: &CStr = c"Apache-2.0";

/// Attaches the program for `rules` to the cgroup at `dir`, replacing (atomically, where the
/// kernel can) the one berth attached there before. With `BestEffort`, a kernel that cannot
/// load or attach it only costs a warning.
pub fn attach(dir: &Path, rules: &[DeviceRule], control: DeviceControl) -> Result<(), CgroupError> {
    match attach_program(dir, rules) {
        Ok(()) => Ok(()),
        Err(e) if control == DeviceControl::BestEffort => {
            tracing::warn!(
                "{e}; the container runs without device control (device_control = \"best-effort\")"
            );
            Ok(())
        }
        Err(e) => Err(e),
    }
}

fn attach_program(dir: &Path, rules: &[DeviceRule]) -> Result<(), CgroupError> {
    let err = |step: &'static str| {
        move |e: std::io::Error| CgroupError::DeviceControl {
            step,
            path: dir.to_path_buf(),
            source: e.into(),
        }
    };
    let prog =
        bpf::load_device_program(&program(rules), LICENSE, "berth_devices").map_err(|e| {
            CgroupError::DeviceControl {
                step: "loading the device program",
                path: dir.to_path_buf(),
                source: e.into(),
            }
        })?;
    let cgroup = std::fs::File::open(dir).map_err(err("opening the cgroup"))?;
    let old: Vec<_> = bpf::attached_device_programs(cgroup.as_fd())
        .map_err(err("listing the attached device programs"))?
        .into_iter()
        // A program freed since the query is gone already.
        .filter_map(|id| bpf::program_by_id(id).ok())
        .collect();
    let replaced = match old.first() {
        Some(first) => {
            bpf::attach_device_program(cgroup.as_fd(), prog.as_fd(), Some(first.as_fd())).is_ok()
        }
        None => false,
    };
    if !replaced {
        // No program yet, or a kernel without BPF_F_REPLACE (before 5.6): attach beside the
        // old ones, then detach them. In between both apply, so access is only narrower.
        bpf::attach_device_program(cgroup.as_fd(), prog.as_fd(), None)
            .map_err(err("attaching the device program"))?;
    }
    for p in old.iter().skip(usize::from(replaced)) {
        bpf::detach_device_program(cgroup.as_fd(), p.as_fd())
            .map_err(err("detaching the previous device program"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroups::ALLOWED_DEVICES;

    /// Runs `prog` on one request as the kernel would, for the opcodes `program` emits. Panics
    /// on anything the verifier would refuse: an unknown opcode, a backward or out-of-range
    /// jump, a read of an unset register, falling off the end.
    fn run(prog: &[Insn], kind: DeviceKind, major: u32, minor: u32, access: u32) -> u64 {
        let kind = match kind {
            DeviceKind::Block => DEV_BLOCK as u32,
            DeviceKind::Char => DEV_CHAR as u32,
        };
        let ctx = [(access << 16) | kind, major, minor];
        // r1 holds the context pointer (its value is never used) until something overwrites it.
        let mut reg: [Option<u64>; 11] = [None; 11];
        reg[1] = Some(0);
        let mut r1_is_ctx = true;
        let mut pc = 0usize;
        loop {
            let i = prog
                .get(pc)
                .unwrap_or_else(|| panic!("fell off the end at {pc}"));
            let (d, s) = (i.dst() as usize, i.src() as usize);
            let get = |r: usize, reg: &[Option<u64>; 11]| {
                reg[r].unwrap_or_else(|| panic!("r{r} read before set at {pc}"))
            };
            let jump = |taken: bool| {
                assert!(i.off >= 0, "backward jump at {pc}");
                let next = pc + 1 + if taken { i.off as usize } else { 0 };
                assert!(next < prog.len(), "jump out of the program at {pc}");
                next
            };
            let value = match i.code {
                LDX_MEM_W => {
                    assert!(
                        s == 1 && r1_is_ctx,
                        "load from a non-context register at {pc}"
                    );
                    assert!(i.off >= 0 && i.off % 4 == 0 && i.off < 12, "bad ctx offset");
                    ctx[i.off as usize / 4] as u64
                }
                ALU_AND_K => (get(d, &reg) as u32 & i.imm as u32) as u64,
                ALU_RSH_K => ((get(d, &reg) as u32) >> i.imm) as u64,
                MOV64_X => get(s, &reg),
                MOV64_K => i.imm as i64 as u64,
                JNE_K => {
                    pc = jump(get(d, &reg) != i.imm as i64 as u64);
                    continue;
                }
                JNE_X => {
                    pc = jump(get(d, &reg) != get(s, &reg));
                    continue;
                }
                EXIT => return get(0, &reg),
                c => panic!("unexpected opcode {c:#x} at {pc}"),
            };
            reg[d] = Some(value);
            if d == 1 {
                r1_is_ctx = false;
            }
            pc += 1;
        }
    }

    fn allowed(rules: &[DeviceRule], kind: DeviceKind, major: u32, minor: u32, acc: u32) -> bool {
        run(&program(rules), kind, major, minor, acc) == 1
    }

    const ACCESSES: [u32; 7] = [1, 2, 3, 4, 5, 6, 7];

    #[test]
    fn decisions_match_the_allowlist_everywhere() {
        let prog = program(ALLOWED_DEVICES);
        let majors = [0, 1, 4, 5, 8, 10, 136, 137, 254, 4095];
        let minors = [0, 1, 2, 3, 5, 7, 8, 9, 11, 200, 255, 1 << 19];
        for kind in [DeviceKind::Char, DeviceKind::Block] {
            for major in majors {
                for minor in minors {
                    for acc in ACCESSES {
                        let want = ALLOWED_DEVICES
                            .iter()
                            .any(|r| r.permits(kind, major, minor, acc));
                        let got = run(&prog, kind, major, minor, acc) == 1;
                        assert_eq!(got, want, "{kind:?} {major}:{minor} access {acc}");
                    }
                }
            }
        }
    }

    #[test]
    fn the_default_allowlist() {
        use DeviceKind::{Block, Char};
        let r = ALLOWED_DEVICES;
        let (m, rd, w) = (DeviceAccess::MKNOD, DeviceAccess::READ, DeviceAccess::WRITE);
        // The container's own nodes, for everything.
        for (maj, min) in [
            (1, 3),
            (1, 5),
            (1, 7),
            (1, 8),
            (1, 9),
            (5, 0),
            (5, 1),
            (5, 2),
        ] {
            assert!(allowed(r, Char, maj, min, rd | w | m), "c {maj}:{min}");
        }
        assert!(allowed(r, Char, 136, 0, rd | w));
        assert!(allowed(r, Char, 136, 77, m));
        // A disk (virtio 254:0, sd 8:0): no read, no write, no mknod.
        for (maj, min) in [(254, 0), (8, 0), (7, 0)] {
            for acc in [rd, w, m, rd | w] {
                assert!(!allowed(r, Block, maj, min, acc), "b {maj}:{min} {acc}");
            }
        }
        // Char devices outside the list: kmsg, mem, tun, fuse, a block numbered like null.
        for (maj, min) in [
            (1, 11),
            (1, 1),
            (10, 200),
            (10, 229),
            (4, 0),
            (5, 3),
            (137, 0),
        ] {
            for acc in [rd, w, m] {
                assert!(!allowed(r, Char, maj, min, acc), "c {maj}:{min} {acc}");
            }
        }
        assert!(!allowed(r, Block, 1, 3, rd));
    }

    #[test]
    fn partial_access_and_wildcards() {
        use DeviceKind::{Block, Char};
        let rules = [
            DeviceRule {
                kind: Block,
                major: Some(7),
                minor: None,
                access: "r",
            },
            DeviceRule {
                kind: Char,
                major: None,
                minor: None,
                access: "m",
            },
        ];
        assert!(allowed(&rules, Block, 7, 3, DeviceAccess::READ));
        assert!(!allowed(
            &rules,
            Block,
            7,
            3,
            DeviceAccess::READ | DeviceAccess::WRITE
        ));
        assert!(!allowed(&rules, Block, 8, 3, DeviceAccess::READ));
        assert!(allowed(&rules, Char, 99, 1, DeviceAccess::MKNOD));
        assert!(!allowed(&rules, Char, 99, 1, DeviceAccess::READ));
        assert!(
            !allowed(&[], Char, 1, 3, DeviceAccess::READ),
            "no rules: deny all"
        );
    }

    #[test]
    fn instruction_sequence() {
        let rules = [DeviceRule {
            kind: DeviceKind::Char,
            major: Some(1),
            minor: Some(3),
            access: "rw",
        }];
        let want = vec![
            Insn::new(LDX_MEM_W, 2, 1, 0, 0),
            Insn::new(ALU_AND_K, 2, 0, 0, 0xffff),
            Insn::new(LDX_MEM_W, 3, 1, 0, 0),
            Insn::new(ALU_RSH_K, 3, 0, 0, 16),
            Insn::new(LDX_MEM_W, 4, 1, 4, 0),
            Insn::new(LDX_MEM_W, 5, 1, 8, 0),
            // c 1:3 rw
            Insn::new(JNE_K, 2, 0, 7, DEV_CHAR),
            Insn::new(MOV64_X, 1, 3, 0, 0),
            Insn::new(ALU_AND_K, 1, 0, 0, 6),
            Insn::new(JNE_X, 1, 3, 4, 0),
            Insn::new(JNE_K, 4, 0, 3, 1),
            Insn::new(JNE_K, 5, 0, 2, 3),
            Insn::new(MOV64_K, 0, 0, 0, 1),
            Insn::new(EXIT, 0, 0, 0, 0),
            // default deny
            Insn::new(MOV64_K, 0, 0, 0, 0),
            Insn::new(EXIT, 0, 0, 0, 0),
        ];
        assert_eq!(program(&rules), want);
        assert_eq!(std::mem::size_of::<Insn>(), 8);
        assert_eq!(Insn::new(0, 3, 1, 0, 0).regs, 0x13);
    }
}
