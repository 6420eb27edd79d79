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
 * functions (rust/glue/abi.rs) and this file wraps each one in an exported C
 * function whose prototype lives in include/kmalloc43.h, so the compiler
 * checks the exported ABI against the header that clients include.
 *
 * It also holds the few C helpers the Rust side needs because the C
 * interface is a macro: __get_free_pages(), might_sleep() and pr_err() with
 * a hashed %p.
 */

#include <linux/build_bug.h>
#include <linux/err.h>
#include <linux/export.h>
#include <linux/gfp.h>
#include <linux/kernel.h>
#include <linux/module.h>
#include <linux/printk.h>

#include "include/kmalloc43.h"

/*
 * The ABI's layouts and flag values, asserted here for C and in rust/glue/abi_check.rs for Rust
 * (which reads this header through bindgen): changing one is an ABI break that must be made on
 * purpose, in the header and in both sets of assertions.
 */
static_assert(sizeof(struct kmalloc43_type) == 4 * sizeof(void *));
static_assert(offsetof(struct kmalloc43_type, handle) == 3 * sizeof(void *));
static_assert(sizeof(struct kmalloc43_totals) == 10 * sizeof(u64));
static_assert(offsetof(struct kmalloc43_totals, chunk_order) == 9 * sizeof(u64));
static_assert(sizeof(struct kmalloc43_type_stats) == 6 * sizeof(u64));
static_assert(KM43_WAITOK == 0x1 && KM43_NOWAIT == 0x2 && KM43_ZERO == 0x4);
static_assert(KM43_VM_SLEEP == 0x1 && KM43_VM_NOSLEEP == 0x2 && KM43_VM_INSTANTFIT == 0 &&
	      KM43_VM_BESTFIT == 0x10 && KM43_VM_NEXTFIT == 0x20);
static_assert(KM43_VMEM_ALLOC == 0x1 && KM43_VMEM_FREE == 0x2);

/* ---- module parameters the Rust module! macro cannot declare ---- */

/*
 * classes=pow2|fine: the size-class mode (rust/core/src/malloc/classes.rs).  A
 * string parameter, which the Rust module! macro does not support; NULL when
 * not given, and the Rust side then uses its default.  Parsed (and a bad
 * value rejected with -EINVAL) by kmalloc43_main.rs at load.
 */
static char *classes;
module_param(classes, charp, 0444);
MODULE_PARM_DESC(classes,
		 "Size classes: fine (at most 8 per doubling, the default) or pow2 (the paper's power-of-two buckets)");

const char *kmalloc43_c_param_classes(void);
const char *kmalloc43_c_param_classes(void)
{
	return classes;
}

/* ---- helpers called from Rust (not exported) ---- */

unsigned long kmalloc43_c_get_pages(gfp_t gfp, unsigned int order);
unsigned long kmalloc43_c_get_pages(gfp_t gfp, unsigned int order)
{
	return __get_free_pages(gfp, order);
}

void kmalloc43_c_might_sleep(void);
void kmalloc43_c_might_sleep(void)
{
	might_sleep();
}

void kmalloc43_c_report(const char *op, const void *addr, const char *type, const char *what);
void kmalloc43_c_report(const char *op, const void *addr, const char *type, const char *what)
{
	/* %p hashes the address: never print raw kernel addresses. */
	pr_err("kmalloc43: %s(%p) type %s: %s\n", op, addr, type, what);
}

/* ---- implemented in Rust (kmalloc43_main.rs, rust/glue/abi.rs) ---- */

int kmalloc43_rust_type_define(struct kmalloc43_type *type);
int kmalloc43_rust_type_undefine(struct kmalloc43_type *type);
void *kmalloc43_rust_malloc(size_t size, struct kmalloc43_type *type, unsigned int flags);
int kmalloc43_rust_free(void *addr, struct kmalloc43_type *type);
void *kmalloc43_rust_realloc(void *addr, size_t size, struct kmalloc43_type *type,
			     unsigned int flags);
size_t kmalloc43_rust_usable_size(const void *addr);
int kmalloc43_rust_totals(struct kmalloc43_totals *out);
int kmalloc43_rust_type_stats(struct kmalloc43_type *type, struct kmalloc43_type_stats *out);
int kmalloc43_rust_vmem_create(const char *name, unsigned long base, size_t size,
			       size_t quantum, kmalloc43_vmem_import_t import,
			       kmalloc43_vmem_release_t release, void *source,
			       size_t qcache_max, unsigned int flags,
			       struct kmalloc43_vmem **out);
int kmalloc43_rust_vmem_destroy(struct kmalloc43_vmem *vm);
int kmalloc43_rust_vmem_add(struct kmalloc43_vmem *vm, unsigned long base, size_t size,
			    unsigned int flags);
int kmalloc43_rust_vmem_alloc(struct kmalloc43_vmem *vm, size_t size, unsigned int flags,
			      unsigned long *addr);
int kmalloc43_rust_vmem_free(struct kmalloc43_vmem *vm, unsigned long addr, size_t size);
int kmalloc43_rust_vmem_xalloc(struct kmalloc43_vmem *vm, size_t size, size_t align,
			       size_t phase, size_t nocross, unsigned long minaddr,
			       unsigned long maxaddr, unsigned int flags, unsigned long *addr);
int kmalloc43_rust_vmem_xfree(struct kmalloc43_vmem *vm, unsigned long addr, size_t size);
int kmalloc43_rust_vmem_walk(struct kmalloc43_vmem *vm, unsigned int typemask,
			     void (*fn)(void *arg, unsigned long base, size_t size), void *arg);
size_t kmalloc43_rust_vmem_size(struct kmalloc43_vmem *vm, unsigned int typemask);
int kmalloc43_rust_vmem_import_from_arena(void *source, size_t size, unsigned int flags,
					  unsigned long *base);
void kmalloc43_rust_vmem_release_to_arena(void *source, unsigned long base, size_t size);

/* ---- exported ---- */

int kmalloc43_type_define(struct kmalloc43_type *type)
{
	return kmalloc43_rust_type_define(type);
}
EXPORT_SYMBOL_GPL(kmalloc43_type_define);

int kmalloc43_type_undefine(struct kmalloc43_type *type)
{
	return kmalloc43_rust_type_undefine(type);
}
EXPORT_SYMBOL_GPL(kmalloc43_type_undefine);

void *kmalloc43_malloc(size_t size, struct kmalloc43_type *type, unsigned int flags)
{
	return kmalloc43_rust_malloc(size, type, flags);
}
EXPORT_SYMBOL_GPL(kmalloc43_malloc);

int kmalloc43_free(void *addr, struct kmalloc43_type *type)
{
	return kmalloc43_rust_free(addr, type);
}
EXPORT_SYMBOL_GPL(kmalloc43_free);

void *kmalloc43_realloc(void *addr, size_t size, struct kmalloc43_type *type, unsigned int flags)
{
	return kmalloc43_rust_realloc(addr, size, type, flags);
}
EXPORT_SYMBOL_GPL(kmalloc43_realloc);

size_t kmalloc43_usable_size(const void *addr)
{
	return kmalloc43_rust_usable_size(addr);
}
EXPORT_SYMBOL_GPL(kmalloc43_usable_size);

int kmalloc43_type_stats(struct kmalloc43_type *type, struct kmalloc43_type_stats *out)
{
	return kmalloc43_rust_type_stats(type, out);
}
EXPORT_SYMBOL_GPL(kmalloc43_type_stats);

int kmalloc43_totals(struct kmalloc43_totals *out)
{
	return kmalloc43_rust_totals(out);
}
EXPORT_SYMBOL_GPL(kmalloc43_totals);

int kmalloc43_vmem_import_from_arena(void *source, size_t size, unsigned int flags,
				     unsigned long *base)
{
	return kmalloc43_rust_vmem_import_from_arena(source, size, flags, base);
}
EXPORT_SYMBOL_GPL(kmalloc43_vmem_import_from_arena);

void kmalloc43_vmem_release_to_arena(void *source, unsigned long base, size_t size)
{
	kmalloc43_rust_vmem_release_to_arena(source, base, size);
}
EXPORT_SYMBOL_GPL(kmalloc43_vmem_release_to_arena);

struct kmalloc43_vmem *kmalloc43_vmem_create(const char *name, unsigned long base, size_t size,
					     size_t quantum, kmalloc43_vmem_import_t import,
					     kmalloc43_vmem_release_t release, void *source,
					     size_t qcache_max, unsigned int flags)
{
	struct kmalloc43_vmem *vm = NULL;
	int ret = kmalloc43_rust_vmem_create(name, base, size, quantum, import, release, source,
					     qcache_max, flags, &vm);

	return ret ? ERR_PTR(ret) : vm;
}
EXPORT_SYMBOL_GPL(kmalloc43_vmem_create);

int kmalloc43_vmem_destroy(struct kmalloc43_vmem *vm)
{
	return kmalloc43_rust_vmem_destroy(vm);
}
EXPORT_SYMBOL_GPL(kmalloc43_vmem_destroy);

int kmalloc43_vmem_add(struct kmalloc43_vmem *vm, unsigned long base, size_t size,
		       unsigned int flags)
{
	return kmalloc43_rust_vmem_add(vm, base, size, flags);
}
EXPORT_SYMBOL_GPL(kmalloc43_vmem_add);

int kmalloc43_vmem_alloc(struct kmalloc43_vmem *vm, size_t size, unsigned int flags,
			 unsigned long *addr)
{
	return kmalloc43_rust_vmem_alloc(vm, size, flags, addr);
}
EXPORT_SYMBOL_GPL(kmalloc43_vmem_alloc);

int kmalloc43_vmem_free(struct kmalloc43_vmem *vm, unsigned long addr, size_t size)
{
	return kmalloc43_rust_vmem_free(vm, addr, size);
}
EXPORT_SYMBOL_GPL(kmalloc43_vmem_free);

int kmalloc43_vmem_xalloc(struct kmalloc43_vmem *vm, size_t size, size_t align, size_t phase,
			  size_t nocross, unsigned long minaddr, unsigned long maxaddr,
			  unsigned int flags, unsigned long *addr)
{
	return kmalloc43_rust_vmem_xalloc(vm, size, align, phase, nocross, minaddr, maxaddr,
					  flags, addr);
}
EXPORT_SYMBOL_GPL(kmalloc43_vmem_xalloc);

int kmalloc43_vmem_xfree(struct kmalloc43_vmem *vm, unsigned long addr, size_t size)
{
	return kmalloc43_rust_vmem_xfree(vm, addr, size);
}
EXPORT_SYMBOL_GPL(kmalloc43_vmem_xfree);

int kmalloc43_vmem_walk(struct kmalloc43_vmem *vm, unsigned int typemask,
			void (*fn)(void *arg, unsigned long base, size_t size), void *arg)
{
	return kmalloc43_rust_vmem_walk(vm, typemask, fn, arg);
}
EXPORT_SYMBOL_GPL(kmalloc43_vmem_walk);

size_t kmalloc43_vmem_size(struct kmalloc43_vmem *vm, unsigned int typemask)
{
	return kmalloc43_rust_vmem_size(vm, typemask);
}
EXPORT_SYMBOL_GPL(kmalloc43_vmem_size);
