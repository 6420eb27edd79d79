// SPDX-License-Identifier: GPL-2.0
/*
 * The kernel side of the kmalloc43 bench module: kmalloc(size, GFP_KERNEL), kfree, ksize,
 * genalloc's gen_pool_* (first-fit, the default algorithm), ktime, get_cycles and the buddy
 * allocator's free-page counter, each wrapped in one out-of-line function so that Rust can call
 * it.  kmalloc43's own calls go through its exported C wrappers, so both sides pay one call.
 */
#include <linux/genalloc.h>
#include <linux/mm.h>
#include <linux/numa.h>
#include <linux/slab.h>
#include <linux/timekeeping.h>
#include <linux/timex.h>
#include <linux/mm.h>

#include "kmalloc43_bench_kernel.h"

u64 kmalloc43_bench_now_ns(void)
{
	return ktime_get_ns();
}

u64 kmalloc43_bench_cycles(void)
{
	return get_cycles();
}

/* Pages free in the buddy allocator: both allocators take their memory from it. */
unsigned long kmalloc43_bench_free_pages(void)
{
	return global_zone_page_state(NR_FREE_PAGES);
}

void *kmalloc43_bench_kmalloc(size_t size)
{
	return kmalloc(size, GFP_KERNEL);
}

void kmalloc43_bench_kfree(void *addr)
{
	kfree(addr);
}

size_t kmalloc43_bench_ksize(const void *addr)
{
	return ksize(addr);
}

/* True when genalloc is part of the kernel, false when lib/genalloc.c is compiled in here. */
bool kmalloc43_bench_genalloc_builtin(void)
{
	return IS_ENABLED(CONFIG_GENERIC_ALLOCATOR);
}

struct gen_pool *kmalloc43_bench_pool_create(int min_alloc_order)
{
	return gen_pool_create(min_alloc_order, NUMA_NO_NODE);
}

int kmalloc43_bench_pool_add(struct gen_pool *pool, unsigned long addr, size_t size)
{
	return gen_pool_add(pool, addr, size, NUMA_NO_NODE);
}

unsigned long kmalloc43_bench_pool_alloc(struct gen_pool *pool, size_t size)
{
	return gen_pool_alloc(pool, size);
}

void kmalloc43_bench_pool_free(struct gen_pool *pool, unsigned long addr, size_t size)
{
	gen_pool_free(pool, addr, size);
}

void kmalloc43_bench_pool_destroy(struct gen_pool *pool)
{
	gen_pool_destroy(pool);
}
