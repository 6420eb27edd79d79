// SPDX-License-Identifier: GPL-2.0

//! A realistic allocation mix: pathname buffers, protocol control blocks, large buffers.

use kernel::prelude::*;

use crate::{
    kmalloc43::{Buffer, Flags, MBox, MVec},
    M_INPCB, M_IOBUF, M_NAMEI,
};

/// Pathname buffers allocated (`MAXPATHLEN`-style, 1 KiB each).
const NAMEI_COUNT: usize = 64;
/// Size of one pathname buffer.
const NAMEI_SIZE: usize = 1024;
/// Protocol control blocks allocated.
const PCB_COUNT: usize = 200;
/// Sizes of the large buffers: all above the largest bucket, so whole pages.
const IOBUF_SIZES: [usize; 3] = [12 * 1024, 32 * 1024, 64 * 1024];

/// TCP state of an established connection.
const TCPS_ESTABLISHED: u32 = 4;

/// A small protocol control block, shaped like a BSD `struct inpcb` for TCP.
#[derive(Default)]
pub(crate) struct InPcb {
    laddr: u32,
    faddr: u32,
    lport: u16,
    fport: u16,
    state: u32,
    snd_una: u32,
    snd_nxt: u32,
    rcv_nxt: u32,
    snd_wnd: u32,
    rcv_wnd: u32,
    srtt: u32,
    rttvar: u32,
    flags: u32,
}

/// What the mix keeps allocated until the module unloads.
pub(crate) struct Kept {
    namei: KVec<Buffer>,
    pcbs: KVec<MBox<InPcb, M_INPCB>>,
    iobufs: KVec<MVec<u8, M_IOBUF>>,
}

impl Kept {
    /// Number of pathname buffers kept.
    pub(crate) fn namei_count(&self) -> usize {
        self.namei.len()
    }

    /// Number of allocations kept.
    pub(crate) fn count(&self) -> usize {
        self.namei.len() + self.pcbs.len() + self.iobufs.len()
    }
}

/// Writes `/usr/src/sys/kern/vfs_<n>.c` and a NUL into `buf` (which is large enough).
fn fill_path(buf: &mut [u8], n: usize) {
    const PREFIX: &[u8] = b"/usr/src/sys/kern/vfs_";
    let mut len = PREFIX.len();
    buf[..len].copy_from_slice(PREFIX);
    let mut digits = [0u8; 20];
    let mut d = 0;
    let mut v = n;
    loop {
        digits[d] = b'0' + (v % 10) as u8;
        d += 1;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    for &c in digits[..d].iter().rev() {
        buf[len] = c;
        len += 1;
    }
    buf[len..len + 3].copy_from_slice(b".c\0");
}

/// Runs the mix, prints what it allocated and freed, and returns what it kept.
pub(crate) fn run() -> Result<Kept> {
    // Pathname buffers: 1 KiB each, zeroed, then filled like a copyinstr() would.
    let mut namei = KVec::with_capacity(NAMEI_COUNT, GFP_KERNEL)?;
    for i in 0..NAMEI_COUNT {
        let mut buf = Buffer::new(&M_NAMEI, NAMEI_SIZE, Flags::WAITOK)?;
        fill_path(&mut buf, i);
        namei.push(buf, GFP_KERNEL)?;
    }
    let namei_usable = namei[0].usable_size();

    // One long path does not fit: grow its buffer, keeping the contents.
    let long = &mut namei[NAMEI_COUNT - 1];
    let before = long.usable_size();
    long.realloc(3000, Flags::WAITOK)?;
    if !long.starts_with(b"/usr/src/sys/kern/vfs_63.c\0") || long[2999] != 0 {
        pr_err!("realloc lost the contents of a pathname buffer\n");
        return Err(EIO);
    }
    pr_info!(
        "namei: {} x {} B buffers (usable {} B each); realloc 1024 -> 3000 B: usable {} -> {} B, contents kept\n",
        NAMEI_COUNT,
        NAMEI_SIZE,
        namei_usable,
        before,
        long.usable_size()
    );

    // Protocol control blocks.
    let mut pcbs = KVec::with_capacity(PCB_COUNT, GFP_KERNEL)?;
    for i in 0..PCB_COUNT {
        let pcb = InPcb {
            laddr: 0x0a00_0001,
            faddr: 0x0a00_0100 + i as u32,
            lport: 80,
            fport: 40000 + i as u16,
            state: TCPS_ESTABLISHED,
            snd_wnd: 65535,
            rcv_wnd: 65535,
            ..Default::default()
        };
        // The kernel's own Box, charged to the inpcb type (GFP_NOWAIT: kmalloc43's NOWAIT).
        pcbs.push(MBox::new(pcb, GFP_NOWAIT)?, GFP_KERNEL)?;
    }
    // Every block reads back as written (the memory is really ours and not shared).
    let intact = pcbs
        .iter()
        .enumerate()
        .filter(|(i, p)| {
            p.laddr == 0x0a00_0001
                && p.faddr == 0x0a00_0100 + *i as u32
                && p.lport == 80
                && p.fport == 40000 + *i as u16
                && p.state == TCPS_ESTABLISHED
                && p.snd_una == p.snd_nxt
                && p.rcv_nxt == 0
                && p.snd_wnd == 65535
                && p.rcv_wnd == p.snd_wnd
                && p.srtt == p.rttvar
                && p.flags == 0
        })
        .count();
    let st = M_INPCB.stats()?;
    pr_info!(
        "inpcb: {} x {} B control blocks in MBox<InPcb, M_INPCB>, {} read back intact; type inpcb: {} in use, {} B\n",
        PCB_COUNT,
        core::mem::size_of::<InPcb>(),
        intact,
        st.inuse,
        st.memuse
    );
    if intact != PCB_COUNT {
        return Err(EIO);
    }

    // A few large buffers, the kernel's Vec charged to the iobuf type: whole pages.
    let mut iobufs = KVec::with_capacity(IOBUF_SIZES.len(), GFP_KERNEL)?;
    for size in IOBUF_SIZES {
        let mut buf = MVec::<u8, M_IOBUF>::with_capacity(size, GFP_KERNEL)?;
        buf.extend_with(size, 0xa5, GFP_KERNEL)?;
        pr_info!(
            "iobuf: MVec<u8, M_IOBUF> of {} B; type iobuf: {} B in use\n",
            buf.len(),
            M_IOBUF.stats()?.memuse
        );
        iobufs.push(buf, GFP_KERNEL)?;
    }

    // Free most of it: keep every 8th pathname, every 10th PCB and the largest buffer.
    let mut kept_namei = KVec::new();
    for (i, buf) in namei.into_iter().enumerate() {
        if i % 8 == 0 {
            kept_namei.push(buf, GFP_KERNEL)?;
        }
    }
    let mut kept_pcbs = KVec::new();
    for (i, pcb) in pcbs.into_iter().enumerate() {
        if i % 10 == 0 {
            kept_pcbs.push(pcb, GFP_KERNEL)?;
        }
    }
    let largest = iobufs.pop().ok_or(EINVAL)?;
    drop(iobufs);
    let mut kept_iobufs = KVec::new();
    kept_iobufs.push(largest, GFP_KERNEL)?;
    pr_info!(
        "freed most: kept {} namei, {} inpcb, {} iobuf until unload\n",
        kept_namei.len(),
        kept_pcbs.len(),
        kept_iobufs.len()
    );
    Ok(Kept {
        namei: kept_namei,
        pcbs: kept_pcbs,
        iobufs: kept_iobufs,
    })
}
