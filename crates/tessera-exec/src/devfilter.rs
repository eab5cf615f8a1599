//! The cgroup v2 device filter: an eBPF program of type `BPF_PROG_TYPE_CGROUP_DEVICE`, built here
//! from a tiny typed instruction set (as runc's `devicefilter` does), because cgroup v2 has no
//! `devices.allow` file. Pure: [`program`] turns a [`DeviceAccess`] into instructions and
//! [`Insn::encode`] into the kernel's 8-byte `struct bpf_insn`; `sys` loads and attaches them.
//!
//! The program sees `struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor; }` in
//! `r1` (`access_type` = access << 16 | type; type 1 = block, 2 = char) and returns 1 to allow,
//! 0 to deny (`EPERM`):
//!
//! ```text
//! r2 = ctx.access_type & 0xffff; r3 = ctx.major; r4 = ctx.minor
//! if r2 != CHAR goto allow
//! if r3 == G1 goto guarded; … ; goto allow          one test per guarded major
//! guarded:
//! if r3 != A1.major goto +2; if r4 != A1.minor goto +1; goto allow   one triple per allowed node
//! r0 = 0; exit
//! allow: r0 = 1; exit
//! ```

use crate::spec::DeviceAccess;

/// `BPF_DEVCG_DEV_CHAR`.
pub(crate) const DEV_CHAR: i32 = 2;

/// A register, r0–r10.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Reg(pub u8);

pub(crate) const R0: Reg = Reg(0);
pub(crate) const R1: Reg = Reg(1);
pub(crate) const R2: Reg = Reg(2);
pub(crate) const R3: Reg = Reg(3);
pub(crate) const R4: Reg = Reg(4);

/// A jump target, resolved when the program is assembled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Label(usize);

/// A conditional jump's comparison with an immediate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cmp {
    Eq,
    Ne,
}

/// The instructions the filter needs, and no more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Insn {
    /// `dst = *(u32 *)(src + off)` (`BPF_LDX | BPF_MEM | BPF_W`).
    LoadWord { dst: Reg, src: Reg, off: i16 },
    /// `dst &= imm` (64-bit, `BPF_ALU64 | BPF_AND | BPF_K`).
    AndImm { dst: Reg, imm: i32 },
    /// `dst = imm` (64-bit, `BPF_ALU64 | BPF_MOV | BPF_K`).
    MovImm { dst: Reg, imm: i32 },
    /// `if dst <cmp> imm goto pc + 1 + off` (`BPF_JMP | BPF_JEQ/BPF_JNE | BPF_K`).
    JumpImm { cmp: Cmp, dst: Reg, imm: i32, off: i16 },
    /// `goto pc + 1 + off` (`BPF_JMP | BPF_JA`).
    Jump { off: i16 },
    /// `return r0` (`BPF_JMP | BPF_EXIT`).
    Exit,
}

impl Insn {
    /// The kernel's `struct bpf_insn`: opcode, `dst_reg` in the low and `src_reg` in the high
    /// nibble, little-endian 16-bit offset and 32-bit immediate.
    pub(crate) fn encode(self) -> [u8; 8] {
        const LDX: u8 = 0x01;
        const ALU64: u8 = 0x07;
        const JMP: u8 = 0x05;
        const MEM_W: u8 = 0x60; // BPF_MEM | BPF_W (0x00)
        const AND: u8 = 0x50;
        const MOV: u8 = 0xb0;
        const JA: u8 = 0x00;
        const JEQ: u8 = 0x10;
        const JNE: u8 = 0x50;
        const EXIT: u8 = 0x90;
        let (code, dst, src, off, imm) = match self {
            Insn::LoadWord { dst, src, off } => (LDX | MEM_W, dst, src, off, 0),
            Insn::AndImm { dst, imm } => (ALU64 | AND, dst, Reg(0), 0, imm),
            Insn::MovImm { dst, imm } => (ALU64 | MOV, dst, Reg(0), 0, imm),
            Insn::JumpImm { cmp, dst, imm, off } => {
                (JMP | if cmp == Cmp::Eq { JEQ } else { JNE }, dst, Reg(0), off, imm)
            }
            Insn::Jump { off } => (JMP | JA, Reg(0), Reg(0), off, 0),
            Insn::Exit => (JMP | EXIT, Reg(0), Reg(0), 0, 0),
        };
        let [o0, o1] = off.to_le_bytes();
        let [i0, i1, i2, i3] = imm.to_le_bytes();
        [code, (src.0 << 4) | (dst.0 & 0x0f), o0, o1, i0, i1, i2, i3]
    }
}

/// An instruction whose jump may still name a label.
#[derive(Debug, Clone, Copy)]
enum Item {
    Plain(Insn),
    JumpImm { cmp: Cmp, dst: Reg, imm: i32, to: Label },
    Jump { to: Label },
}

/// Builds a program with forward jumps to labels.
#[derive(Debug, Default)]
pub(crate) struct Asm {
    items: Vec<Item>,
    labels: Vec<Option<usize>>,
}

impl Asm {
    pub(crate) fn label(&mut self) -> Label {
        self.labels.push(None);
        Label(self.labels.len() - 1)
    }
    /// Places `label` at the next instruction.
    pub(crate) fn bind(&mut self, label: Label) {
        self.labels[label.0] = Some(self.items.len());
    }
    pub(crate) fn push(&mut self, insn: Insn) {
        self.items.push(Item::Plain(insn));
    }
    pub(crate) fn jump_if(&mut self, cmp: Cmp, dst: Reg, imm: i32, to: Label) {
        self.items.push(Item::JumpImm { cmp, dst, imm, to });
    }
    pub(crate) fn jump(&mut self, to: Label) {
        self.items.push(Item::Jump { to });
    }

    /// Resolves the labels into relative offsets. `None` when a label was never bound or a
    /// jump does not fit in 16 bits (neither happens with the programs built here).
    pub(crate) fn assemble(self) -> Option<Vec<Insn>> {
        let offset = |pc: usize, to: Label| -> Option<i16> {
            let target = self.labels.get(to.0).copied().flatten()?;
            i16::try_from(target as i64 - pc as i64 - 1).ok()
        };
        self.items
            .iter()
            .enumerate()
            .map(|(pc, item)| match *item {
                Item::Plain(insn) => Some(insn),
                Item::JumpImm { cmp, dst, imm, to } => Some(Insn::JumpImm { cmp, dst, imm, off: offset(pc, to)? }),
                Item::Jump { to } => Some(Insn::Jump { off: offset(pc, to)? }),
            })
            .collect()
    }
}

/// The filter for `access` (see the module docs). Majors and minors are at most 20 bits
/// (checked by [`crate::Isolation::check`]), so they fit the 32-bit immediates unchanged.
pub(crate) fn program(access: &DeviceAccess) -> Option<Vec<Insn>> {
    let mut guarded: Vec<u32> = access.guarded_majors.clone();
    guarded.sort_unstable();
    guarded.dedup();
    let mut allowed: Vec<_> = access.allow.iter().filter(|d| guarded.contains(&d.major)).copied().collect();
    allowed.sort_unstable();
    allowed.dedup();
    let imm = |v: u32| i32::try_from(v).ok();

    let mut asm = Asm::default();
    let (allow, guard) = (asm.label(), asm.label());
    asm.push(Insn::LoadWord { dst: R2, src: R1, off: 0 });
    asm.push(Insn::AndImm { dst: R2, imm: 0xffff });
    asm.push(Insn::LoadWord { dst: R3, src: R1, off: 4 });
    asm.push(Insn::LoadWord { dst: R4, src: R1, off: 8 });
    asm.jump_if(Cmp::Ne, R2, DEV_CHAR, allow);
    for &major in &guarded {
        asm.jump_if(Cmp::Eq, R3, imm(major)?, guard);
    }
    asm.jump(allow);
    asm.bind(guard);
    for dev in &allowed {
        let next = asm.label();
        asm.jump_if(Cmp::Ne, R3, imm(dev.major)?, next);
        asm.jump_if(Cmp::Ne, R4, imm(dev.minor)?, next);
        asm.jump(allow);
        asm.bind(next);
    }
    asm.push(Insn::MovImm { dst: R0, imm: 0 });
    asm.push(Insn::Exit);
    asm.bind(allow);
    asm.push(Insn::MovImm { dst: R0, imm: 1 });
    asm.push(Insn::Exit);
    asm.assemble()
}

/// What the program answers for one access: the reference semantics, run over the same
/// instructions by a tiny interpreter in the tests.
#[cfg(test)]
fn decide(access: &DeviceAccess, dev_type: i32, major: u32, minor: u32) -> bool {
    dev_type != DEV_CHAR
        || !access.guarded_majors.contains(&major)
        || access.allow.iter().any(|d| d.major == major && d.minor == minor)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::DeviceNumber;

    /// Bytes as the kernel's macros build them (`include/uapi/linux/bpf_common.h` and `bpf.h`:
    /// e.g. `BPF_LDX | BPF_MEM | BPF_W` = 0x61; `dst_reg` in the low nibble, little-endian
    /// `off` and `imm`).
    #[test]
    fn encodes_known_bytes() {
        let cases: [(Insn, [u8; 8]); 8] = [
            (Insn::LoadWord { dst: R2, src: R1, off: 0 }, [0x61, 0x12, 0, 0, 0, 0, 0, 0]),
            (Insn::LoadWord { dst: R4, src: R1, off: 8 }, [0x61, 0x14, 8, 0, 0, 0, 0, 0]),
            (Insn::AndImm { dst: R2, imm: 0xffff }, [0x57, 0x02, 0, 0, 0xff, 0xff, 0, 0]),
            (Insn::MovImm { dst: R0, imm: 1 }, [0xb7, 0x00, 0, 0, 1, 0, 0, 0]),
            (Insn::JumpImm { cmp: Cmp::Ne, dst: R2, imm: 2, off: 5 }, [0x55, 0x02, 5, 0, 2, 0, 0, 0]),
            (Insn::JumpImm { cmp: Cmp::Eq, dst: R3, imm: 195, off: 0x102 }, [0x15, 0x03, 2, 1, 195, 0, 0, 0]),
            (Insn::Jump { off: -1 }, [0x05, 0x00, 0xff, 0xff, 0, 0, 0, 0]),
            (Insn::Exit, [0x95, 0, 0, 0, 0, 0, 0, 0]),
        ];
        for (insn, bytes) in cases {
            assert_eq!(insn.encode(), bytes, "{insn:?}");
        }
    }

    #[test]
    fn labels_resolve_to_relative_offsets() {
        let mut asm = Asm::default();
        let end = asm.label();
        asm.jump(end); // pc 0 → 3: off 2
        asm.push(Insn::MovImm { dst: R0, imm: 0 });
        asm.jump_if(Cmp::Eq, R0, 0, end); // pc 2 → 3: off 0
        asm.bind(end);
        asm.push(Insn::Exit);
        let insns = asm.assemble().unwrap();
        assert_eq!(insns[0], Insn::Jump { off: 2 });
        assert_eq!(insns[2], Insn::JumpImm { cmp: Cmp::Eq, dst: R0, imm: 0, off: 0 });
        let mut unbound = Asm::default();
        let nowhere = unbound.label();
        unbound.jump(nowhere);
        assert!(unbound.assemble().is_none());
    }

    /// Runs a program over one context: just enough of the eBPF machine for these instructions.
    fn run(prog: &[Insn], access_type: u32, major: u32, minor: u32) -> u64 {
        let ctx = [access_type, major, minor];
        let mut r = [0u64; 11];
        let mut pc = 0usize;
        for _ in 0..10_000 {
            match prog[pc] {
                Insn::LoadWord { dst, src, off } => {
                    assert_eq!(src, R1);
                    r[dst.0 as usize] = u64::from(ctx[off as usize / 4]);
                }
                Insn::AndImm { dst, imm } => r[dst.0 as usize] &= imm as i64 as u64,
                Insn::MovImm { dst, imm } => r[dst.0 as usize] = imm as i64 as u64,
                Insn::JumpImm { cmp, dst, imm, off } => {
                    let equal = r[dst.0 as usize] == imm as i64 as u64;
                    if equal == (cmp == Cmp::Eq) {
                        pc = (pc as i64 + i64::from(off)) as usize;
                    }
                }
                Insn::Jump { off } => pc = (pc as i64 + i64::from(off)) as usize,
                Insn::Exit => return r[0],
            }
            pc += 1;
        }
        panic!("the program did not end");
    }

    #[test]
    fn the_program_allows_exactly_what_the_rule_allows() {
        let dev = |major, minor| DeviceNumber { major, minor };
        let accesses = [
            DeviceAccess { guarded_majors: vec![195, 508], allow: vec![dev(195, 7), dev(195, 255), dev(508, 1)] },
            DeviceAccess { guarded_majors: vec![195], allow: vec![] },
            DeviceAccess { guarded_majors: vec![], allow: vec![dev(195, 0)] },
            // An allowed node whose major is not guarded is allowed anyway.
            DeviceAccess { guarded_majors: vec![195, 195], allow: vec![dev(1, 3), dev(195, 1)] },
        ];
        let probes = [(195, 7), (195, 8), (195, 255), (508, 0), (508, 1), (1, 3), (10, 200), (0, 0), (4095, 1)];
        for access in &accesses {
            let prog = program(access).unwrap();
            for (dev_type, access_bits) in [(DEV_CHAR, 2u32), (DEV_CHAR, 6), (1, 2)] {
                for (major, minor) in probes {
                    let access_type = (access_bits << 16) | dev_type as u32;
                    let want = decide(access, dev_type, major, minor);
                    let got = run(&prog, access_type, major, minor);
                    assert_eq!(got, u64::from(want), "{access:?} type {dev_type} {major}:{minor}");
                }
            }
        }
    }
}
