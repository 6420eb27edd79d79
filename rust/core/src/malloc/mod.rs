// SPDX-License-Identifier: GPL-2.0

//! The 4.3BSD kernel malloc of McKusick & Karels (placeholder; see issue 4).
