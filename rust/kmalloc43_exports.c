// SPDX-License-Identifier: GPL-2.0
/*
 * kmalloc43: the symbols exported to other modules.
 *
 * Why a C file: EXPORT_SYMBOL_GPL() is the kernel's one supported way to
 * export a symbol, and its output (the .export_symbol records modpost reads
 * into Module.symvers) is an internal format of include/linux/export.h that
 * changes between kernel versions.  Emitting those records from Rust would
 * copy that format into this project.  Instead, as drivers/android/binder
 * does, the Rust crate provides unexported #[no_mangle] extern "C"
 * functions and this file wraps each one in an exported C function whose
 * prototype lives in include/kmalloc43.h, so the compiler checks the
 * exported ABI against the header that clients include.
 */

#include <linux/export.h>
#include <linux/module.h>

#include "include/kmalloc43.h"

/* Implemented in kmalloc43_main.rs. */
int kmalloc43_rust_page_cycle(void);

int kmalloc43_page_cycle(void)
{
	return kmalloc43_rust_page_cycle();
}
EXPORT_SYMBOL_GPL(kmalloc43_page_cycle);
