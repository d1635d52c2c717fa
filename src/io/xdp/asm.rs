//! A small eBPF assembler: just the instructions the steering program uses,
//! with labels resolved when the program is finished.
//!
//! Why an assembler and not C compiled by clang: the program is about a
//! hundred instructions, and building it from Rust means `cargo build` needs
//! no BPF toolchain, no ELF loader and no BTF, on any machine; map file
//! descriptors go straight into the `ld_imm64` instructions at load time, so
//! there are no relocations either. The encoding follows the kernel's
//! documented instruction set (`Documentation/bpf/standardization`).
//!
//! Contract: `finish` fails if a label was used but never bound or a jump
//! does not fit in 16 bits; nothing here is unsafe.
#![forbid(unsafe_code)]

/// A register, `r0`..`r10` (`r10` is the read-only frame pointer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reg(pub u8);

pub const R0: Reg = Reg(0);
pub const R1: Reg = Reg(1);
pub const R2: Reg = Reg(2);
pub const R3: Reg = Reg(3);
pub const R4: Reg = Reg(4);
pub const R5: Reg = Reg(5);
pub const R6: Reg = Reg(6);
pub const R7: Reg = Reg(7);
pub const R8: Reg = Reg(8);
pub const R9: Reg = Reg(9);
/// The frame pointer: the stack is the 512 bytes below it.
pub const FP: Reg = Reg(10);

/// One 8-byte instruction as the kernel reads it (`struct bpf_insn`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    pub code: u8,
    /// `dst` in the low nibble, `src` in the high one.
    pub regs: u8,
    pub off: i16,
    pub imm: i32,
}

/// Memory access width.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Size {
    B,
    H,
    W,
    DW,
}

impl Size {
    fn bits(self) -> u8 {
        match self {
            Size::W => 0x00,
            Size::H => 0x08,
            Size::B => 0x10,
            Size::DW => 0x18,
        }
    }
}

/// Conditional jump operations (unsigned comparisons).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cond {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
}

impl Cond {
    fn bits(self) -> u8 {
        match self {
            Cond::Eq => 0x10,
            Cond::Gt => 0x20,
            Cond::Ge => 0x30,
            Cond::Ne => 0x50,
            Cond::Lt => 0xa0,
            Cond::Le => 0xb0,
        }
    }
}

/// 64-bit ALU operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alu {
    Add,
    And,
    Lsh,
    Mov,
}

impl Alu {
    fn bits(self) -> u8 {
        match self {
            Alu::Add => 0x00,
            Alu::And => 0x50,
            Alu::Lsh => 0x60,
            Alu::Mov => 0xb0,
        }
    }
}

const CLASS_LD: u8 = 0x00;
const CLASS_LDX: u8 = 0x01;
const CLASS_ST: u8 = 0x02;
const CLASS_STX: u8 = 0x03;
const CLASS_JMP: u8 = 0x05;
const CLASS_ALU64: u8 = 0x07;
const MODE_IMM: u8 = 0x00;
const MODE_MEM: u8 = 0x60;
const SRC_K: u8 = 0x00;
const SRC_X: u8 = 0x08;
const OP_CALL: u8 = 0x80;
const OP_EXIT: u8 = 0x90;
/// `BPF_PSEUDO_MAP_FD`: the `ld_imm64` immediate is a map file descriptor.
const PSEUDO_MAP_FD: u8 = 1;

/// A jump target; bind it once with [`Asm::bind`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Label(usize);

/// Why a program could not be finished.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AsmError {
    #[error("BPF assembler: label {0} used but never bound")]
    Unbound(usize),
    #[error("BPF assembler: jump at {0} does not fit in 16 bits")]
    Far(usize),
}

/// The program being written.
#[derive(Debug, Default)]
pub struct Asm {
    insns: Vec<Insn>,
    labels: Vec<Option<usize>>,
    fixups: Vec<(usize, Label)>,
}

fn regs(dst: Reg, src: Reg) -> u8 {
    (src.0 << 4) | (dst.0 & 0x0f)
}

impl Asm {
    pub fn new() -> Self {
        Self::default()
    }

    fn emit(&mut self, code: u8, dst: Reg, src: Reg, off: i16, imm: i32) {
        self.insns.push(Insn {
            code,
            regs: regs(dst, src),
            off,
            imm,
        });
    }

    /// A new, unbound label.
    pub fn label(&mut self) -> Label {
        self.labels.push(None);
        Label(self.labels.len() - 1)
    }

    /// Binds `l` to the next instruction.
    pub fn bind(&mut self, l: Label) {
        self.labels[l.0] = Some(self.insns.len());
    }

    /// `dst op= imm` (64-bit).
    pub fn alu_imm(&mut self, op: Alu, dst: Reg, imm: i32) {
        self.emit(CLASS_ALU64 | op.bits() | SRC_K, dst, R0, 0, imm);
    }

    /// `dst op= src` (64-bit).
    pub fn alu_reg(&mut self, op: Alu, dst: Reg, src: Reg) {
        self.emit(CLASS_ALU64 | op.bits() | SRC_X, dst, src, 0, 0);
    }

    /// `dst = imm`.
    pub fn mov_imm(&mut self, dst: Reg, imm: i32) {
        self.alu_imm(Alu::Mov, dst, imm);
    }

    /// `dst = src`.
    pub fn mov(&mut self, dst: Reg, src: Reg) {
        self.alu_reg(Alu::Mov, dst, src);
    }

    /// `dst = *(size *)(src + off)`.
    pub fn load(&mut self, size: Size, dst: Reg, src: Reg, off: i16) {
        self.emit(CLASS_LDX | MODE_MEM | size.bits(), dst, src, off, 0);
    }

    /// `*(size *)(dst + off) = src`.
    pub fn store(&mut self, size: Size, dst: Reg, off: i16, src: Reg) {
        self.emit(CLASS_STX | MODE_MEM | size.bits(), dst, src, off, 0);
    }

    /// `*(size *)(dst + off) = imm`.
    pub fn store_imm(&mut self, size: Size, dst: Reg, off: i16, imm: i32) {
        self.emit(CLASS_ST | MODE_MEM | size.bits(), dst, R0, off, imm);
    }

    /// `dst = map` (the two-slot `ld_imm64` with a map file descriptor).
    pub fn load_map_fd(&mut self, dst: Reg, fd: i32) {
        self.emit(
            CLASS_LD | MODE_IMM | Size::DW.bits(),
            dst,
            Reg(PSEUDO_MAP_FD),
            0,
            fd,
        );
        self.emit(0, R0, R0, 0, 0);
    }

    fn jump_fixup(&mut self, code: u8, dst: Reg, src: Reg, imm: i32, to: Label) {
        self.fixups.push((self.insns.len(), to));
        self.emit(code, dst, src, 0, imm);
    }

    /// `goto to`.
    pub fn ja(&mut self, to: Label) {
        self.jump_fixup(CLASS_JMP, R0, R0, 0, to);
    }

    /// `if dst cond imm goto to`.
    pub fn jmp_imm(&mut self, cond: Cond, dst: Reg, imm: i32, to: Label) {
        self.jump_fixup(CLASS_JMP | cond.bits() | SRC_K, dst, R0, imm, to);
    }

    /// `if dst cond src goto to`.
    pub fn jmp_reg(&mut self, cond: Cond, dst: Reg, src: Reg, to: Label) {
        self.jump_fixup(CLASS_JMP | cond.bits() | SRC_X, dst, src, 0, to);
    }

    /// Calls helper number `helper` (arguments in r1..r5, result in r0;
    /// r1..r5 are clobbered, r6..r9 kept).
    pub fn call(&mut self, helper: i32) {
        self.emit(CLASS_JMP | OP_CALL, R0, R0, 0, helper);
    }

    /// Returns r0.
    pub fn exit(&mut self) {
        self.emit(CLASS_JMP | OP_EXIT, R0, R0, 0, 0);
    }

    /// Resolves the jumps and returns the instructions.
    pub fn finish(mut self) -> Result<Vec<Insn>, AsmError> {
        for &(at, l) in &self.fixups {
            let target = self.labels[l.0].ok_or(AsmError::Unbound(l.0))?;
            let rel = target as i64 - (at as i64 + 1);
            self.insns[at].off = i16::try_from(rel).map_err(|_| AsmError::Far(at))?;
        }
        Ok(self.insns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_like_the_kernel_documents() {
        let mut a = Asm::new();
        let out = a.label();
        a.mov_imm(R0, 2); // b7 00 .. imm 2
        a.jmp_imm(Cond::Eq, R1, 5, out); // 15 01 off 1
        a.load(Size::W, R2, R1, 4); // 61 12 off 4
        a.bind(out);
        a.load_map_fd(R1, 7); // 18 11 imm 7, then a zero slot
        a.exit(); // 95
        let p = a.finish().unwrap();
        assert_eq!(
            p[0],
            Insn {
                code: 0xb7,
                regs: 0x00,
                off: 0,
                imm: 2
            }
        );
        assert_eq!(
            p[1],
            Insn {
                code: 0x15,
                regs: 0x01,
                off: 1,
                imm: 5
            }
        );
        assert_eq!(
            p[2],
            Insn {
                code: 0x61,
                regs: 0x12,
                off: 4,
                imm: 0
            }
        );
        assert_eq!(
            p[3],
            Insn {
                code: 0x18,
                regs: 0x11,
                off: 0,
                imm: 7
            }
        );
        assert_eq!(
            p[4],
            Insn {
                code: 0,
                regs: 0,
                off: 0,
                imm: 0
            }
        );
        assert_eq!(p[5].code, 0x95);
    }

    #[test]
    fn unbound_label_is_an_error() {
        let mut a = Asm::new();
        let l = a.label();
        a.ja(l);
        assert_eq!(a.finish(), Err(AsmError::Unbound(0)));
    }

    #[test]
    fn backward_jumps_resolve() {
        let mut a = Asm::new();
        let top = a.label();
        a.bind(top);
        a.mov_imm(R0, 0);
        a.ja(top);
        let p = a.finish().unwrap();
        assert_eq!(p[1].off, -2);
    }
}
