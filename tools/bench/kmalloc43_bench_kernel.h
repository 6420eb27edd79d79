/* SPDX-License-Identifier: GPL-2.0 */
/*
 * C helpers of the kmalloc43 bench module (kmalloc43_bench_kernel.c), called from its Rust
 * code (kmalloc43_bench/kernel.rs declares the same prototypes).  Each one is a plain call of
 * what C code would write, so the kernel's allocators are measured as C callers use them.
 */
#ifndef _KMALLOC43_BENCH_KERNEL_H
#define _KMALLOC43_BENCH_KERNEL_H

#include <linux/types.h>

struct gen_pool;

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

void *kmalloc43_bench_kmalloc(size_t size);
void kmalloc43_bench_kfree(void *addr);
size_t kmalloc43_bench_ksize(const void *addr);

bool kmalloc43_bench_genalloc_builtin(void);
struct gen_pool *kmalloc43_bench_pool_create(int min_alloc_order);
int kmalloc43_bench_pool_add(struct gen_pool *pool, unsigned long addr, size_t size);
unsigned long kmalloc43_bench_pool_alloc(struct gen_pool *pool, size_t size);
void kmalloc43_bench_pool_free(struct gen_pool *pool, unsigned long addr, size_t size);
void kmalloc43_bench_pool_destroy(struct gen_pool *pool);

#endif /* _KMALLOC43_BENCH_KERNEL_H */
