// SPDX-License-Identifier: GPL-2.0

//! vmem: Bonwick & Adams' general-purpose resource allocator (placeholder; see issue 3).
