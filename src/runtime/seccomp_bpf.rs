//! Compiles a seccomp decision table into one classic-BPF program: the architecture check,
//! then a binary search over the ranges of syscall numbers that share an answer.
//!
//! A listed-call chain (one comparison per syscall, as seccompiler and an unoptimised
//! libseccomp emit) costs every syscall of the container up to some 400 comparisons, and the
//! kernel checks and JITs the whole chain again at every container start. The search costs
//! about log2(ranges) comparisons (some 8 for Docker's profile) and the program is a fraction of
//! the size.
//!
//! Owns: the program's layout and the meaning of each [`Decision`]. Pure: nothing here is
//! installed (see `seccomp::install`).

use std::collections::BTreeMap;

use seccompiler::sock_filter;

/// A classic-BPF program, as `seccomp(SECCOMP_SET_MODE_FILTER)` takes it.
pub type Program = Vec<sock_filter>;

/// What the filter answers for one syscall number. The argument rules read the low 32 bits
/// of an argument, which is what the kernel reads of each of them (`personality`'s unsigned
/// int, `socket`'s int family, and the flags of the legacy `clone`, of which the kernel keeps
/// the lower 32 bits); a failed rule answers the table's default errno.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Errno(u32),
    /// Allowed when argument `arg` is one of `values`.
    ArgIn {
        arg: u8,
        values: Vec<u32>,
    },
    /// Allowed unless argument `arg` is `value`.
    ArgNot {
        arg: u8,
        value: u32,
    },
    /// Allowed when argument `arg` has none of the bits of `mask`.
    ArgClear {
        arg: u8,
        mask: u32,
    },
}

/// The whole profile: the architecture it is for (`AUDIT_ARCH_*`; any other is killed), the
/// errno of every number not in `calls`, and the decisions.
#[derive(Debug, Clone)]
pub struct Table {
    pub arch: u32,
    pub default_errno: u32,
    pub calls: BTreeMap<u32, Decision>,
}

/// The answer of a filter (the kernel's `SECCOMP_RET_*` value).
pub const RET_ALLOW: u32 = libc::SECCOMP_RET_ALLOW;
pub const RET_KILL_PROCESS: u32 = libc::SECCOMP_RET_KILL_PROCESS;

pub fn ret_errno(errno: u32) -> u32 {
    libc::SECCOMP_RET_ERRNO | (errno & libc::SECCOMP_RET_DATA)
}

// Offsets in `struct seccomp_data`.
const DATA_NR: u32 = 0;
const DATA_ARCH: u32 = 4;
const DATA_ARGS: u32 = 16;

// Instruction codes (linux/filter.h).
const LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const JGE_K: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
const JSET_K: u16 = (libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K) as u16;
const JA: u16 = (libc::BPF_JMP | libc::BPF_JA) as u16;
const RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;

fn stmt(code: u16, k: u32) -> sock_filter {
    sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> sock_filter {
    sock_filter { code, jt, jf, k }
}

/// The low 32 bits of argument `arg` in `seccomp_data` (the architectures berth filters are
/// little-endian).
#[cfg(target_endian = "little")]
fn arg_low(arg: u8) -> u32 {
    DATA_ARGS + 8 * u32::from(arg)
}

impl Table {
    /// What this table answers for syscall `nr` with arguments `args` on architecture `arch`:
    /// the meaning the compiled program must have.
    pub fn decide(&self, arch: u32, nr: u32, args: [u64; 6]) -> u32 {
        if arch != self.arch {
            return RET_KILL_PROCESS;
        }
        let low = |a: u8| args[usize::from(a)] as u32;
        let deny = ret_errno(self.default_errno);
        match self.calls.get(&nr) {
            None => deny,
            Some(Decision::Allow) => RET_ALLOW,
            Some(Decision::Errno(e)) => ret_errno(*e),
            Some(Decision::ArgIn { arg, values }) => {
                if values.contains(&low(*arg)) {
                    RET_ALLOW
                } else {
                    deny
                }
            }
            Some(Decision::ArgNot { arg, value }) => {
                if low(*arg) != *value {
                    RET_ALLOW
                } else {
                    deny
                }
            }
            Some(Decision::ArgClear { arg, mask }) => {
                if low(*arg) & mask == 0 {
                    RET_ALLOW
                } else {
                    deny
                }
            }
        }
    }

    /// The program: the architecture check, the syscall number, the search.
    pub fn compile(&self) -> Program {
        let mut prog = vec![
            stmt(LD_W_ABS, DATA_ARCH),
            jump(JEQ_K, self.arch, 1, 0),
            stmt(RET_K, RET_KILL_PROCESS),
            stmt(LD_W_ABS, DATA_NR),
        ];
        let deny = Decision::Errno(self.default_errno);
        prog.extend(search(&self.ranges(&deny), self.default_errno));
        prog
    }

    /// Every syscall number from 0 to u32::MAX in runs that share a decision: each run's first
    /// number and its decision, the first run starting at 0.
    fn ranges<'a>(&'a self, deny: &'a Decision) -> Vec<(u32, &'a Decision)> {
        let mut runs: Vec<(u32, &Decision)> = vec![(0, deny)];
        let mut push = |start: u32, d: &'a Decision| {
            if runs.last().is_some_and(|(_, last)| *last == d) {
                return;
            }
            match runs.last_mut() {
                // A run that starts here and is replaced before it covered anything.
                Some(last) if last.0 == start => *last = (start, d),
                _ => runs.push((start, d)),
            }
        };
        for (&nr, d) in &self.calls {
            push(nr, d);
            if let Some(next) = nr.checked_add(1) {
                if !self.calls.contains_key(&next) {
                    push(next, deny);
                }
            }
        }
        runs
    }
}

/// A binary search over `runs` (A holds the syscall number): `jge` on the middle run's start,
/// the lower half falling through and the upper half jumped to.
fn search(runs: &[(u32, &Decision)], default_errno: u32) -> Program {
    if let [(_, decision)] = runs {
        return leaf(decision, default_errno);
    }
    let mid = runs.len() / 2;
    let lower = search(&runs[..mid], default_errno);
    let upper = search(&runs[mid..], default_errno);
    let mut prog = Vec::with_capacity(lower.len() + upper.len() + 2);
    match u8::try_from(lower.len()) {
        Ok(skip) => prog.push(jump(JGE_K, runs[mid].0, skip, 0)),
        Err(_) => {
            // Too far for a conditional jump: through an unconditional one.
            prog.push(jump(JGE_K, runs[mid].0, 0, 1));
            prog.push(stmt(JA, lower.len() as u32));
        }
    }
    prog.extend(lower);
    prog.extend(upper);
    prog
}

/// The instructions that answer for one run (ending in a return).
fn leaf(decision: &Decision, default_errno: u32) -> Program {
    let deny = stmt(RET_K, ret_errno(default_errno));
    let allow = stmt(RET_K, RET_ALLOW);
    match decision {
        Decision::Allow => vec![allow],
        Decision::Errno(e) => vec![stmt(RET_K, ret_errno(*e))],
        Decision::ArgIn { arg, values } => {
            // ld; jeq v0..vn-1 (each true jumps to the allow at the end); deny; allow.
            let mut p = vec![stmt(LD_W_ABS, arg_low(*arg))];
            let n = values.len();
            for (i, v) in values.iter().enumerate() {
                let to_allow = u8::try_from(n - i).expect("a short list of argument values");
                p.push(jump(JEQ_K, *v, to_allow, 0));
            }
            p.extend([deny, allow]);
            p
        }
        Decision::ArgNot { arg, value } => vec![
            stmt(LD_W_ABS, arg_low(*arg)),
            jump(JEQ_K, *value, 0, 1),
            deny,
            allow,
        ],
        Decision::ArgClear { arg, mask } => vec![
            stmt(LD_W_ABS, arg_low(*arg)),
            jump(JSET_K, *mask, 0, 1),
            deny,
            allow,
        ],
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Runs `prog` as the kernel would on a `seccomp_data` of (nr, arch, args): the
    /// instructions this module emits, every jump checked to stay inside the program.
    pub(crate) fn run(prog: &[sock_filter], nr: u32, arch: u32, args: [u64; 6]) -> u32 {
        let load = |off: u32| -> u32 {
            match off {
                DATA_NR => nr,
                DATA_ARCH => arch,
                o if o >= DATA_ARGS && (o - DATA_ARGS).is_multiple_of(4) && o < DATA_ARGS + 48 => {
                    let i = ((o - DATA_ARGS) / 8) as usize;
                    if (o - DATA_ARGS).is_multiple_of(8) {
                        args[i] as u32
                    } else {
                        (args[i] >> 32) as u32
                    }
                }
                o => panic!("load of offset {o}"),
            }
        };
        let (mut pc, mut a) = (0usize, 0u32);
        loop {
            let i = prog
                .get(pc)
                .unwrap_or_else(|| panic!("pc {pc} past the end"));
            let branch = |taken: bool| 1 + usize::from(if taken { i.jt } else { i.jf });
            pc += match i.code {
                LD_W_ABS => {
                    a = load(i.k);
                    1
                }
                JEQ_K => branch(a == i.k),
                JGE_K => branch(a >= i.k),
                JSET_K => branch(a & i.k != 0),
                JA => 1 + i.k as usize,
                RET_K => return i.k,
                c => panic!("instruction {c:#x}"),
            };
        }
    }

    fn table() -> Table {
        Table {
            arch: 7,
            default_errno: 1,
            calls: BTreeMap::from([
                (0, Decision::Allow),
                (1, Decision::Allow),
                (3, Decision::Allow),
                (4, Decision::Errno(38)),
                (
                    5,
                    Decision::ArgIn {
                        arg: 0,
                        values: vec![0, 8, 0xffff_ffff],
                    },
                ),
                (6, Decision::ArgNot { arg: 1, value: 40 }),
                (7, Decision::ArgClear { arg: 0, mask: 0x30 }),
                (9, Decision::Allow),
                (u32::MAX, Decision::Allow),
            ]),
        }
    }

    #[test]
    fn runs_cover_every_number_once() {
        let t = table();
        let deny = Decision::Errno(1);
        let runs = t.ranges(&deny);
        let starts: Vec<u32> = runs.iter().map(|(s, _)| *s).collect();
        assert_eq!(starts, [0, 2, 3, 4, 5, 6, 7, 8, 9, 10, u32::MAX]);
        assert!(runs.windows(2).all(|w| w[0].1 != w[1].1));
        // Adjacent allowed calls share one run.
        let t = Table {
            arch: 7,
            default_errno: 1,
            calls: (10..20).map(|n| (n, Decision::Allow)).collect(),
        };
        let runs = t.ranges(&deny);
        assert_eq!(runs.len(), 3);
        assert_eq!((runs[1].0, runs[2].0), (10, 20));
        // A table starting at 0 replaces the leading deny.
        let t = Table {
            arch: 7,
            default_errno: 1,
            calls: BTreeMap::from([(0, Decision::Allow)]),
        };
        assert_eq!(t.ranges(&deny)[0], (0, &Decision::Allow));
    }

    #[test]
    fn program_means_the_table() {
        let t = table();
        let prog = t.compile();
        let arg_values = [
            0u64,
            8,
            40,
            0x10,
            0x20,
            0x31,
            0xffff_ffff,
            0x1_0000_0008,
            u64::MAX,
        ];
        for nr in (0..64).chain([0x4000_0000, 0x4000_0003, u32::MAX - 1, u32::MAX]) {
            for &v in &arg_values {
                let args = [v, v, 0, 0, 0, 0];
                for arch in [7, 8] {
                    assert_eq!(
                        run(&prog, nr, arch, args),
                        t.decide(arch, nr, args),
                        "nr {nr} arch {arch} args {args:x?}"
                    );
                }
            }
        }
        assert_eq!(run(&prog, 5, 7, [8, 0, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(run(&prog, 5, 7, [9, 0, 0, 0, 0, 0]), ret_errno(1));
        assert_eq!(run(&prog, 4, 7, [0; 6]), ret_errno(38));
        assert_eq!(run(&prog, 1, 8, [0; 6]), RET_KILL_PROCESS);
    }

    #[test]
    fn far_jumps_go_through_ja() {
        // Every other number allowed: many runs, a lower half longer than 255 instructions.
        let t = Table {
            arch: 7,
            default_errno: 1,
            calls: (0..2000).step_by(2).map(|n| (n, Decision::Allow)).collect(),
        };
        let prog = t.compile();
        assert!(prog.iter().any(|i| i.code == JA));
        for nr in 0..2100 {
            assert_eq!(
                run(&prog, nr, 7, [0; 6]),
                t.decide(7, nr, [0; 6]),
                "nr {nr}"
            );
        }
    }
}
