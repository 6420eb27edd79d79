/* SPDX-License-Identifier: GPL-2.0 */
/*
 * C helpers of the kmalloc43 bench module (kmalloc43_bench_kernel.c), called from its Rust
 * code (kmalloc43_bench/kernel_side.rs declares the same prototypes): what the kernel offers
 * only as C macros and inlines.  kmalloc and kfree are not among them: the Rust code calls their
 * entries directly, as C callers do (see the .c file).
 */
#ifndef _KMALLOC43_BENCH_KERNEL_H
#define _KMALLOC43_BENCH_KERNEL_H

#include <linux/types.h>

struct gen_pool;
struct kmem_cache;

u64 kmalloc43_bench_now_ns(void);
u64 kmalloc43_bench_cycles(void);
unsigned long kmalloc43_bench_free_pages(void);
size_t kmalloc43_bench_describe_kernel(char *buf, size_t len);
unsigned int kmalloc43_bench_online_cpus(void);
void kmalloc43_bench_settle(void);
void kmalloc43_bench_nothing(void *arg);
void kmalloc43_bench_lock_round(void);
void kmalloc43_bench_irq_round(void);
s64 kmalloc43_bench_on_cpus(unsigned int ncpus, void (*fn)(void *arg), void *arg,
			    u64 *thread_ns);

struct kmem_cache *const *kmalloc43_bench_kmalloc_slot(size_t size);

bool kmalloc43_bench_genalloc_builtin(void);
struct gen_pool *kmalloc43_bench_pool_create(int min_alloc_order);
int kmalloc43_bench_pool_add(struct gen_pool *pool, unsigned long addr, size_t size);
unsigned long kmalloc43_bench_pool_alloc(struct gen_pool *pool, size_t size);
void kmalloc43_bench_pool_free(struct gen_pool *pool, unsigned long addr, size_t size);
void kmalloc43_bench_pool_destroy(struct gen_pool *pool);

#endif /* _KMALLOC43_BENCH_KERNEL_H */
