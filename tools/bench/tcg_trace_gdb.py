# SPDX-License-Identifier: GPL-2.0
"""gdb script: the guest instructions of one call, stepped through QEMU's gdb stub.

    gdb -batch -ex 'set $k43_port=PORT' -x tcg_trace_gdb.py -ex 'k43-trace OUT.json ADDR...'

For each ADDR (a function's entry), breaks there once, then single-steps until the call
returns (the stack pointer above the entry's and the return address reached) and writes the
executed instructions, each with the guest virtual addresses of its memory operands, as JSON
lines to OUT.json. Interrupts and timers are off while QEMU's stub single-steps (its default).
"""

import json
import re

import gdb

MEM = re.compile(r"(?:%(?P<seg>[fg]s):)?(?P<disp>-?0x[0-9a-f]+|-?\d+)?\((?P<base>%\w+)?(?:,(?P<index>%\w+)(?:,(?P<scale>\d))?)?\)")
ABS_SEG = re.compile(r"%(?P<seg>[fg]s):(?P<disp>-?0x[0-9a-f]+|-?\d+)(?![\w(])")


def reg(name):
    return int(gdb.parse_and_eval("$" + name)) & 0xFFFFFFFFFFFFFFFF


def reg64(name):
    """The 64-bit register that holds a (possibly 32-bit) register's value."""
    table = {"eax": "rax", "ebx": "rbx", "ecx": "rcx", "edx": "rdx", "esi": "rsi", "edi": "rdi",
             "ebp": "rbp", "esp": "rsp"}
    name = name.lstrip("%")
    if name in table:
        return reg(table[name]) & 0xFFFFFFFF
    m = re.fullmatch(r"r(\d+)d", name)
    if m:
        return reg("r" + m.group(1)) & 0xFFFFFFFF
    return reg(name)


def operands(asm, pc, length):
    """Guest addresses of the explicit memory operands of one instruction."""
    mnemonic = asm.split()[0] if asm.split() else ""
    if mnemonic.startswith("lea") or mnemonic.startswith("nop"):
        return []
    out = []
    for m in MEM.finditer(asm):
        base = m.group("base")
        if base == "%rip":
            ea = pc + length + int(m.group("disp") or "0", 0)
        else:
            ea = int(m.group("disp") or "0", 0)
            if base:
                ea += reg64(base)
            if m.group("index"):
                ea += reg64(m.group("index")) * int(m.group("scale") or "1")
        if m.group("seg"):
            ea += reg(m.group("seg") + "_base")
        out.append(ea & 0xFFFFFFFFFFFFFFFF)
    if not out:
        for m in ABS_SEG.finditer(asm):
            out.append((int(m.group("disp"), 0) + reg(m.group("seg") + "_base")) & 0xFFFFFFFFFFFFFFFF)
    return out


class Trace(gdb.Command):
    def __init__(self):
        super().__init__("k43-trace", gdb.COMMAND_USER)

    def invoke(self, arg, from_tty):
        args = arg.split()
        path, entries = args[0], [int(a, 0) for a in args[1:]]
        arch = gdb.selected_frame().architecture()
        with open(path, "a") as out:
            for entry in entries:
                bp = gdb.Breakpoint("*%#x" % entry, internal=True)
                gdb.execute("continue", to_string=True)
                bp.delete()
                sp0 = reg("rsp")
                ret = int(gdb.parse_and_eval("*(unsigned long *)$rsp")) & 0xFFFFFFFFFFFFFFFF
                steps = 0
                while True:
                    pc = reg("rip")
                    if pc == ret and reg("rsp") > sp0:
                        break
                    insn = arch.disassemble(pc)[0]
                    asm = insn["asm"]
                    rec = {"entry": entry, "pc": pc, "len": insn["length"], "asm": asm,
                           "mem": operands(asm, pc, insn["length"]), "rsp": reg("rsp")}
                    out.write(json.dumps(rec) + "\n")
                    gdb.execute("stepi", to_string=True)
                    steps += 1
                    if steps > 5000:
                        raise gdb.GdbError("no return after 5000 steps from %#x" % entry)


Trace()
