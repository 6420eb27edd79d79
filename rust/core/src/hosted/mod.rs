// SPDX-License-Identifier: GPL-2.0

//! Host-only wrappers that need `std`: sleeping allocation on top of the `no_std` cores, built with
//! `Mutex` and `Condvar` the way the kernel glue builds them with its own locks and wait queues.

pub mod magazines;
pub mod malloc_host_pages;
pub mod malloc_wait;
pub mod registry;
pub mod replay;
pub mod replay_front;
pub mod trace_csv;
pub mod vmem;
