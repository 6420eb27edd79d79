// SPDX-License-Identifier: GPL-2.0
/*
 * The kernel side of the kmalloc43 bench module: genalloc's gen_pool_* (first-fit, the default
 * algorithm), ktime, get_cycles, the buddy allocator's free-page counter, the .config facts of
 * the table header, a bare spinlock and kthreads bound to CPUs, each wrapped in one out-of-line
 * function so that Rust can call it.
 *
 * The allocators under test are not wrapped: the Rust code calls kmalloc's entries
 * (__kmalloc_noprof, __kmalloc_cache_noprof, kfree) directly, one call each, as C code's
 * kmalloc(size, GFP_KERNEL) and kfree() do, and kmalloc43_malloc/kmalloc43_free directly, as C
 * callers of kmalloc43.h do.  A wrapper here would add a call, or a tail jump from this module
 * into vmlinux, to one side only.  This file gives only where a constant-size kmalloc finds its
 * cache (kmalloc43_bench_kmalloc_slot).
 */
#include <linux/atomic.h>
#include <linux/completion.h>
#include <linux/cpumask.h>
#include <linux/err.h>
#include <linux/genalloc.h>
#include <linux/kthread.h>
#include <linux/minmax.h>
#include <linux/mm.h>
#include <linux/numa.h>
#include <linux/preempt.h>
#include <linux/rcupdate.h>
#include <linux/processor.h>
#include <linux/slab.h>
#include <linux/spinlock.h>
#include <linux/sprintf.h>
#include <linux/timekeeping.h>
#include <linux/timex.h>

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

/*
 * The entry of kmalloc_caches that kmalloc(size, GFP_KERNEL) reads on every call when size is a
 * compile-time constant (slab.h's _kmalloc_noprof: kmalloc_index() and kmalloc_type() fold to
 * constants, and the call is __kmalloc_cache_noprof(kmalloc_caches[type][index], flags, size)).
 * NULL for 0 and above KMALLOC_MAX_CACHE_SIZE, where constant sizes call __kmalloc_large_noprof.
 * __kmalloc_index(size, false) is kmalloc_index() for a size known only at run time.
 */
struct kmem_cache *const *kmalloc43_bench_kmalloc_slot(size_t size)
{
	if (!size || size > KMALLOC_MAX_CACHE_SIZE)
		return NULL;
	return &kmalloc_caches[kmalloc_type(GFP_KERNEL, __kmalloc_token(size))]
			      [__kmalloc_index(size, false)];
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

/* The preemption model in force (PREEMPT_DYNAMIC can switch it at boot). */
static const char *kmalloc43_bench_preempt_model(void)
{
	if (preempt_model_rt())
		return "rt";
	if (preempt_model_lazy())
		return "lazy";
	if (preempt_model_full())
		return "full";
	if (preempt_model_voluntary())
		return "voluntary";
	return "none";
}

/*
 * The .config facts that decide what kmalloc is measured against, one line into buf (NUL
 * terminated).  Returns the length.
 */
size_t kmalloc43_bench_describe_kernel(char *buf, size_t len)
{
	return scnprintf(buf, len,
			 "SLUB_TINY=%s SLAB_FREELIST_HARDENED=%s SLAB_FREELIST_RANDOM=%s %s preempt=%s%s NR_CPUS=%d vCPUs online=%u PROVE_LOCKING=%s",
			 IS_ENABLED(CONFIG_SLUB_TINY) ? "y" : "n",
			 IS_ENABLED(CONFIG_SLAB_FREELIST_HARDENED) ? "y" : "n",
			 IS_ENABLED(CONFIG_SLAB_FREELIST_RANDOM) ? "y" : "n",
			 IS_ENABLED(CONFIG_CC_OPTIMIZE_FOR_SIZE) ? "-Os" : "-O2",
			 kmalloc43_bench_preempt_model(),
			 IS_ENABLED(CONFIG_PREEMPT_DYNAMIC) ? " (PREEMPT_DYNAMIC)" : "",
			 CONFIG_NR_CPUS, num_online_cpus(),
			 IS_ENABLED(CONFIG_PROVE_LOCKING) ? "y" : "n");
}

unsigned int kmalloc43_bench_online_cpus(void)
{
	return num_online_cpus();
}

/* An out-of-line call that does nothing: the price of a call across the module boundary. */
noinline void kmalloc43_bench_nothing(void *arg)
{
	barrier();
}

/*
 * Before a section: every RCU callback queued so far has run (twice: a callback may queue itself
 * once more).  kmalloc43's slot locks leave their slow mode by such a callback a grace period
 * after the last remote taker (the type definitions above took every slot), and a section
 * measures the steady state, where no other CPU takes them (Documentation/magazines.rst, "The
 * slot lock's fast and slow mode").  Nothing of kmalloc's changes.
 */
void kmalloc43_bench_settle(void)
{
	rcu_barrier();
	rcu_barrier();
}

static DEFINE_SPINLOCK(kmalloc43_bench_lock);

/* One uncontended spin_lock_irqsave + spin_unlock_irqrestore, as kmalloc43's heap lock does. */
void kmalloc43_bench_lock_round(void)
{
	unsigned long flags;

	spin_lock_irqsave(&kmalloc43_bench_lock, flags);
	spin_unlock_irqrestore(&kmalloc43_bench_lock, flags);
}

/* One local_irq_save + local_irq_restore: what a fast path pays to keep interrupts away. */
void kmalloc43_bench_irq_round(void)
{
	unsigned long flags;

	local_irq_save(flags);
	barrier();
	local_irq_restore(flags);
}

/*
 * kthreads of kmalloc43_bench_on_cpus: all wait for "go", then meet at a spin barrier so that
 * the clock starts only when every one of them is running (a woken vCPU may take a while to be
 * scheduled by the host: that is not the allocators' time), run fn(arg), note when they ended.
 */
struct kmalloc43_bench_crew {
	void (*fn)(void *arg);
	void *arg;
	unsigned int ncpus;
	struct completion go;
	atomic_t arrived;
	int started;
	u64 start;
	u64 end[2];
	atomic_t running;
	struct completion done;
};

struct kmalloc43_bench_member {
	struct kmalloc43_bench_crew *crew;
	unsigned int index;
};

static int kmalloc43_bench_worker(void *data)
{
	struct kmalloc43_bench_member *me = data;
	struct kmalloc43_bench_crew *crew = me->crew;

	wait_for_completion(&crew->go);
	if (atomic_inc_return(&crew->arrived) == crew->ncpus) {
		crew->start = ktime_get_ns();
		smp_store_release(&crew->started, 1);
	} else {
		while (!smp_load_acquire(&crew->started))
			cpu_relax();
	}
	crew->fn(crew->arg);
	crew->end[me->index] = ktime_get_ns();
	if (atomic_dec_and_test(&crew->running))
		complete(&crew->done);
	return 0;
}

/*
 * Runs fn(arg) in one kthread bound to each of CPUs 0..ncpus-1 (at most 2), all released at once,
 * and waits for the last to finish.  Returns the nanoseconds from the moment all of them were
 * running (the spin barrier) to the last finish, or a negative errno (a CPU not online, kthread
 * creation failed); thread_ns[i] (ncpus entries) gets the same interval for CPU i's kthread alone.
 */
s64 kmalloc43_bench_on_cpus(unsigned int ncpus, void (*fn)(void *arg), void *arg, u64 *thread_ns)
{
	struct kmalloc43_bench_crew crew = { .fn = fn, .arg = arg, .ncpus = ncpus };
	struct kmalloc43_bench_member members[ARRAY_SIZE(crew.end)];
	struct task_struct *tasks[ARRAY_SIZE(crew.end)];
	unsigned int cpu;
	u64 last = 0;
	long err;

	if (ncpus == 0 || ncpus > ARRAY_SIZE(tasks))
		return -EINVAL;
	for (cpu = 0; cpu < ncpus; cpu++)
		if (!cpu_online(cpu))
			return -ENODEV;
	atomic_set(&crew.running, ncpus);
	atomic_set(&crew.arrived, 0);
	init_completion(&crew.go);
	init_completion(&crew.done);
	for (cpu = 0; cpu < ncpus; cpu++) {
		members[cpu] = (struct kmalloc43_bench_member){ .crew = &crew, .index = cpu };
		tasks[cpu] = kthread_create_on_cpu(kmalloc43_bench_worker, &members[cpu], cpu,
						   "k43bench/%u");
		if (IS_ERR(tasks[cpu])) {
			err = PTR_ERR(tasks[cpu]);
			/* The ones created have not run: kthread_stop ends them before fn. */
			while (cpu--)
				kthread_stop(tasks[cpu]);
			return err;
		}
	}
	for (cpu = 0; cpu < ncpus; cpu++)
		wake_up_process(tasks[cpu]);
	complete_all(&crew.go);
	wait_for_completion(&crew.done);
	for (cpu = 0; cpu < ncpus; cpu++) {
		thread_ns[cpu] = crew.end[cpu] - crew.start;
		last = max(last, crew.end[cpu]);
	}
	return last - crew.start;
}
