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
#include <linux/kmemleak.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/completion.h>
#include <linux/delay.h>
#include <linux/jiffies.h>
#include <linux/hrtimer.h>
#include <linux/irq_work.h>
#include <linux/kthread.h>
#include <linux/mm.h>
#include <linux/percpu.h>
#include <linux/printk.h>
#include <linux/random.h>
#include <linux/rcupdate.h>
#include <linux/shrinker.h>
#include <linux/slab.h>
#include <linux/spinlock.h>
#include <linux/vmalloc.h>
#include <linux/workqueue.h>

#include "include/kmalloc43.h"

/*
 * The ABI's layouts and flag values, asserted here for C and in rust/glue/abi_check.rs for Rust
 * (which reads this header through bindgen): changing one is an ABI break that must be made on
 * purpose, in the header and in both sets of assertions.
 */
static_assert(sizeof(struct kmalloc43_type) == 5 * sizeof(void *));
static_assert(offsetof(struct kmalloc43_type, owner) == 3 * sizeof(void *));
static_assert(offsetof(struct kmalloc43_type, handle) == 4 * sizeof(void *));
static_assert(sizeof(struct kmalloc43_totals) == 13 * sizeof(u64));
static_assert(offsetof(struct kmalloc43_totals, shrinker_pages_freed) == 12 * sizeof(u64));
static_assert(offsetof(struct kmalloc43_totals, chunk_order) == 9 * sizeof(u64));
static_assert(sizeof(struct kmalloc43_type_stats) == 6 * sizeof(u64));
static_assert(sizeof(struct kmalloc43_aged) == 3 * sizeof(u64));
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

/*
 * The random bits of the round mark's per-boot key (rust/glue/magazines.rs, init_round_key):
 * never blocks; before the pool is seeded it returns what it has.
 */
u64 kmalloc43_c_random_u64(void);
u64 kmalloc43_c_random_u64(void)
{
	return get_random_u64();
}

/* kmalloc43_malloc(KM43_WAITOK)'s fast path: might_sleep() as a tail call that returns @p. */
void *kmalloc43_c_might_sleep_ret(void *p);
void *kmalloc43_c_might_sleep_ret(void *p)
{
	might_sleep();
	return p;
}

void kmalloc43_c_report(const char *op, const void *addr, const char *type, const char *what);
void kmalloc43_c_report(const char *op, const void *addr, const char *type, const char *what)
{
	/* %p hashes the address: never print raw kernel addresses. */
	pr_err("kmalloc43: %s(%p) type %s: %s\n", op, addr, type, what);
}

/*
 * ---- per-CPU slot locks (rust/glue/percpu.rs) ----
 *
 * One spinlock per possible CPU guards that CPU's magazine slot.  The owner
 * takes its own with preemption disabled (the heap's slots: PREEMPT_OFF) or
 * with local interrupts disabled (the quantum caches': IRQS_OFF), uncontended:
 * the lock word sits at the start of the owner's slot; any CPU may take every
 * CPU's lock at once (in CPU order, nested under 'all' so lockdep accepts the
 * same class many times) to revoke credits, flush magazines or read exact
 * statistics.
 *
 * The owner's path is the allocator's fast path, so it is spelled out:
 * disable preemption (or save and disable interrupts), tell lockdep
 * (spin_acquire on the spinlock_t's own map, so lockdep sees a spinlock_t: its
 * wait type, its order against the heap and depot locks, its use in hardirq
 * context), take the arch lock, and keep any saved interrupt state in the
 * slot, where the unlock finds it.  IRQS_OFF locks are released in the reverse
 * order of taking them (the Rust guards are scoped that way), as with
 * spin_lock_irqsave().
 *
 * A PREEMPT_OFF slot may be held by the task an interrupt interrupted, so
 * outside task context it is only ever tried (kmalloc43_c_pcpu_trylock_local(),
 * annotated as a trylock like local_trylock(): lockdep then records no hardirq
 * use of the class), never waited for: kmalloc43_c_pcpu_lock_local() and
 * kmalloc43_c_pcpu_lock_all() warn outside task context.  In task context a
 * held slot's holder runs on another CPU (one on this CPU would be running:
 * preemption is off under it) and holds every slot: it finishes without
 * waiting for this task.
 *
 * The heap's (PREEMPT_OFF) locks have two modes (rust/core/src/magazine/slot_sync.rs, the
 * protocol; Documentation/magazines.rst, "The slot lock's fast and slow mode"): while no other
 * CPU takes them (fast mode: l->sync is 0), the owner takes its own with a plain load and store
 * of the locked byte, no lock-prefixed instruction; a remote taker (lock_all, lock_cpu,
 * trylock_all, in Rust) first enters slow mode (Rust: l->sync set, then synchronize_rcu(), so
 * that every owner section that saw fast mode has ended) and leaves it lazily (call_rcu(): the
 * mode turns fast a grace period after the last taker left).  In slow mode the owner takes its
 * lock with a cmpxchg, as a remote taker does.  The C side keeps the mode's callback, the
 * kick of an atomic-context reader (kmalloc43_c_pcpu_kick()) and the owner's acquire of the
 * test kernel's helpers; the protocol's decisions are Rust's.
 */
/* The page-hint bitmap's users (below, with the page hints): one per lock set. */
static int kmalloc43_ours_get(void);
static void kmalloc43_ours_put(void);

/*
 * A CPU's lock: the first field of its slot (rust/glue/percpu.rs, Slot and its CSlotLock, which
 * has the same layout), so that the inline slot lock finds the lock word at the slot's address
 * and a pair reads the lock on the slot's own page (Documentation/performance.rst, "Fewer pages
 * per pair").
 */
struct kmalloc43_pcpu_slot {
	spinlock_t lock;
	unsigned long flags;	/* interrupt state saved by the holder */
};

struct kmalloc43_pcpu_locks {
	/* The mode word (Rust's SlotSync): 0 in fast mode.  Read by every owner acquire. */
	u32 sync;
	unsigned int flavour;	/* KMALLOC43_PCPU_* */
	/* The return to fast mode a grace period after the last taker (SlotSync::passed). */
	struct rcu_head sync_rcu;
	/* An atomic-context reader's kick: slow mode entered and held for a while. */
	struct delayed_work kick;
	bool kick_held;
	spinlock_t all;
	unsigned long all_flags;
	/*
	 * Each CPU's slot (Rust's Slot, which begins with the CPU's lock), by CPU id, set by
	 * kmalloc43_c_pcpu_slot_init(): also the Rust side's table for the inline slot lock's
	 * owner acquire, kept here so that it reads the mode word and the slot's address from one
	 * allocation, one page (Documentation/performance.rst, "Fewer pages per pair").
	 */
	struct kmalloc43_pcpu_slot *slot[];
};

/* The mode protocol's steps, in Rust (rust/glue/percpu.rs). */
void kmalloc43_rust_pcpu_sync_enter(struct kmalloc43_pcpu_locks *l);
void kmalloc43_rust_pcpu_sync_exit(struct kmalloc43_pcpu_locks *l);
void kmalloc43_rust_pcpu_sync_passed(struct kmalloc43_pcpu_locks *l);
bool kmalloc43_rust_pcpu_sync_quiesce(struct kmalloc43_pcpu_locks *l);

/* How long a kick keeps slow mode (then it is left lazily, as by any taker). */
#define KMALLOC43_KICK_HOLD	HZ

static void kmalloc43_pcpu_kick_fn(struct work_struct *w)
{
	struct kmalloc43_pcpu_locks *l =
		container_of(to_delayed_work(w), struct kmalloc43_pcpu_locks, kick);

	/* A work item never runs twice at once: kick_held is this function's. */
	if (!l->kick_held) {
		kmalloc43_rust_pcpu_sync_enter(l);
		l->kick_held = true;
		queue_delayed_work(system_dfl_wq, &l->kick, KMALLOC43_KICK_HOLD);
	} else {
		l->kick_held = false;
		kmalloc43_rust_pcpu_sync_exit(l);
	}
}

/*
 * The flavours of rust/glue/percpu.rs (Flavour::C_FLAVOUR), each a lockdep class of its own (the
 * slots and their 'all'): the client arenas' quantum caches take their slots with interrupts off
 * and under the arena lock; the heap's slots are the magazine layer's.
 */
#define KMALLOC43_PCPU_IRQS_OFF		0
#define KMALLOC43_PCPU_PREEMPT_OFF	1

static struct lock_class_key kmalloc43_slot_keys[2], kmalloc43_all_keys[2];
static const char *const kmalloc43_slot_names[2] = { "kmalloc43_qcache_slot", "kmalloc43_heap_slot" };
static const char *const kmalloc43_all_names[2] = { "kmalloc43_qcache_slots_all",
						    "kmalloc43_heap_slots_all" };

struct kmalloc43_pcpu_locks *kmalloc43_c_pcpu_locks_new(unsigned int flavour);
struct kmalloc43_pcpu_locks *kmalloc43_c_pcpu_locks_new(unsigned int flavour)
{
	struct kmalloc43_pcpu_locks *l = kzalloc(struct_size(l, slot, nr_cpu_ids), GFP_KERNEL);

	if (!l)
		return NULL;
	/* Every heap has one lock set: the page-hint bitmap lives while any heap does. */
	if (kmalloc43_ours_get()) {
		kfree(l);
		return NULL;
	}
	flavour = min(flavour, KMALLOC43_PCPU_PREEMPT_OFF);
	l->flavour = flavour;
	INIT_DELAYED_WORK(&l->kick, kmalloc43_pcpu_kick_fn);
	spin_lock_init(&l->all);
	lockdep_set_class_and_name(&l->all, &kmalloc43_all_keys[flavour],
				   kmalloc43_all_names[flavour]);
	return l;
}

/* The size of a slot's lock (Rust's CSlotLock must match it). */
size_t kmalloc43_c_pcpu_slot_lock_size(void);
size_t kmalloc43_c_pcpu_slot_lock_size(void)
{
	return sizeof(struct kmalloc43_pcpu_slot);
}

/*
 * Gives @l CPU @cpu's slot @s (its lock, zeroed, at its start; it outlives @l) and initialises
 * the lock, before any use of @l.  Called for every CPU id below nr_cpu_ids.
 */
void kmalloc43_c_pcpu_slot_init(struct kmalloc43_pcpu_locks *l, unsigned int cpu,
				struct kmalloc43_pcpu_slot *s);
void kmalloc43_c_pcpu_slot_init(struct kmalloc43_pcpu_locks *l, unsigned int cpu,
				struct kmalloc43_pcpu_slot *s)
{
	l->slot[cpu] = s;
	spin_lock_init(&s->lock);
	lockdep_set_class_and_name(&s->lock, &kmalloc43_slot_keys[l->flavour],
				   kmalloc43_slot_names[l->flavour]);
}

void kmalloc43_c_pcpu_locks_free(struct kmalloc43_pcpu_locks *l);
void kmalloc43_c_pcpu_locks_free(struct kmalloc43_pcpu_locks *l)
{
	/* No taker is left but a kick's: it leaves, and the mode's callback is waited for. */
	cancel_delayed_work_sync(&l->kick);
	if (l->kick_held)
		kmalloc43_rust_pcpu_sync_exit(l);
	if (kmalloc43_rust_pcpu_sync_quiesce(l))
		rcu_barrier();
	kfree(l);
	kmalloc43_ours_put();
}

/* Preemption (PREEMPT_OFF) or local interrupts (IRQS_OFF, saved in @flags) disabled. */
static __always_inline void kmalloc43_slot_enter(struct kmalloc43_pcpu_locks *l,
						 unsigned long *flags)
{
	if (l->flavour == KMALLOC43_PCPU_PREEMPT_OFF)
		preempt_disable();
	else
		local_irq_save(*flags);
}

/* What kmalloc43_slot_enter() disabled, enabled again. */
static __always_inline void kmalloc43_slot_leave(struct kmalloc43_pcpu_locks *l,
						 unsigned long flags)
{
	if (l->flavour == KMALLOC43_PCPU_PREEMPT_OFF)
		preempt_enable();
	else
		local_irq_restore(flags);
}

/* Whether the owner may take its lock plainly: a PREEMPT_OFF set in fast mode (inside the section). */
static __always_inline bool kmalloc43_slot_fast(struct kmalloc43_pcpu_locks *l)
{
	return l->flavour == KMALLOC43_PCPU_PREEMPT_OFF && !smp_load_acquire(&l->sync);
}

/*
 * The owner's acquire of its own lock (slot_sync::try_lock_local): in fast mode only this CPU's
 * contexts touch the word, so a plain load and store of the locked byte; else a cmpxchg
 * (arch_spin_trylock()).
 */
static __always_inline bool kmalloc43_slot_trylock(arch_spinlock_t *lock, bool fast)
{
#ifdef CONFIG_QUEUED_SPINLOCKS
	if (fast) {
		if (READ_ONCE(lock->locked))
			return false;
		WRITE_ONCE(lock->locked, _Q_LOCKED_VAL);
		/* The slot's accesses stay after the store, where a nested interrupt sees it held. */
		barrier();
		return true;
	}
#endif
	return arch_spin_trylock(lock);
}

static __always_inline unsigned int kmalloc43_lock_local(struct kmalloc43_pcpu_locks *l,
							 unsigned long ip)
{
	struct kmalloc43_pcpu_slot *s;
	unsigned long flags = 0;
	unsigned int cpu;

	/* A wait, even if the lock turns out free: task context only for a PREEMPT_OFF slot. */
	WARN_ON_ONCE(l->flavour == KMALLOC43_PCPU_PREEMPT_OFF && !in_task());
	kmalloc43_slot_enter(l, &flags);
	cpu = smp_processor_id();
	s = l->slot[cpu];
	spin_acquire(&s->lock.dep_map, 0, 0, ip);
	/*
	 * In fast mode nobody else can hold it: a holder on this CPU would be running (preemption
	 * is off under it), and no other CPU takes it.
	 */
	if (!kmalloc43_slot_trylock(&s->lock.rlock.raw_lock, kmalloc43_slot_fast(l)))
		arch_spin_lock(&s->lock.rlock.raw_lock);
	s->flags = flags;
	return cpu;
}

/* Disables preemption or local interrupts, locks this CPU's slot and returns the CPU. */
unsigned int kmalloc43_c_pcpu_lock_local(struct kmalloc43_pcpu_locks *l);
unsigned int kmalloc43_c_pcpu_lock_local(struct kmalloc43_pcpu_locks *l)
{
	return kmalloc43_lock_local(l, _RET_IP_);
}

/*
 * kmalloc43_c_pcpu_lock_local() if this CPU's slot is free at once, else preemption or
 * interrupts restored and UINT_MAX: a caller that must not wait for the holder (not in task
 * context) then takes the interrupt fall-back, which touches no slot.  Annotated as a trylock,
 * as local_trylock() annotates its lock (lock_map_acquire_try()).
 */
static __always_inline unsigned int kmalloc43_trylock_local(struct kmalloc43_pcpu_locks *l,
							    unsigned long ip)
{
	struct kmalloc43_pcpu_slot *s;
	unsigned long flags = 0;
	unsigned int cpu;

	kmalloc43_slot_enter(l, &flags);
	cpu = smp_processor_id();
	s = l->slot[cpu];
	if (!kmalloc43_slot_trylock(&s->lock.rlock.raw_lock, kmalloc43_slot_fast(l))) {
		kmalloc43_slot_leave(l, flags);
		return UINT_MAX;
	}
	spin_acquire(&s->lock.dep_map, 0, 1, ip);
	lockdep_assert_preemption_disabled();
	s->flags = flags;
	return cpu;
}

unsigned int kmalloc43_c_pcpu_trylock_local(struct kmalloc43_pcpu_locks *l);
unsigned int kmalloc43_c_pcpu_trylock_local(struct kmalloc43_pcpu_locks *l)
{
	return kmalloc43_trylock_local(l, _RET_IP_);
}

/* Whether the caller runs in task context (in_task()): it may then wait for a slot. */
bool kmalloc43_c_in_task(void);
bool kmalloc43_c_in_task(void)
{
	return in_task();
}

void kmalloc43_c_pcpu_unlock_local(struct kmalloc43_pcpu_locks *l, unsigned int cpu);
void kmalloc43_c_pcpu_unlock_local(struct kmalloc43_pcpu_locks *l, unsigned int cpu)
{
	struct kmalloc43_pcpu_slot *s = l->slot[cpu];
	unsigned long flags = s->flags;

	spin_release(&s->lock.dep_map, _RET_IP_);
	arch_spin_unlock(&s->lock.rlock.raw_lock);
	kmalloc43_slot_leave(l, flags);
}

/*
 * The inline slot lock (rust/glue/percpu.rs, on kernels without lockdep, interrupt-flag
 * tracing, preemption debugging or tracing, or paravirtualised interrupt and spinlock
 * operations): Rust disables preemption (incq of __preempt_count) or saves and disables
 * interrupts, reads cpu_number and takes @cpu's arch lock word itself, with the fast path of
 * queued_spin_lock() (one cmpxchg from 0 to _Q_LOCKED_VAL) and of queued_spin_unlock() (a
 * release store of 0 to the locked byte, byte 0 of the word), then enables preemption again
 * (decq, and kmalloc43_c_preempt_schedule() when it reaches zero) or interrupts.  These give
 * it the word, take the lock when the cmpxchg finds it held (a lock_all() holder on another
 * CPU; @task_only: a PREEMPT_OFF slot, which only task context may wait for) and schedule.
 */
u32 *kmalloc43_c_pcpu_lock_word(struct kmalloc43_pcpu_locks *l, unsigned int cpu);
u32 *kmalloc43_c_pcpu_lock_word(struct kmalloc43_pcpu_locks *l, unsigned int cpu)
{
	BUILD_BUG_ON(sizeof(arch_spinlock_t) != sizeof(u32));
	BUILD_BUG_ON(_Q_LOCKED_VAL != 1);
	BUILD_BUG_ON(offsetof(arch_spinlock_t, locked) != 0);
	return (u32 *)&l->slot[cpu]->lock.rlock.raw_lock;
}

/* @l's table of the slots' addresses by CPU id (nr_cpu_ids entries, the Rust side's). */
void **kmalloc43_c_pcpu_slot_table(struct kmalloc43_pcpu_locks *l);
void **kmalloc43_c_pcpu_slot_table(struct kmalloc43_pcpu_locks *l)
{
	return (void **)l->slot;
}

/* The mode word of @l (Rust's SlotSync), for the owners' acquires and the protocol. */
u32 *kmalloc43_c_pcpu_sync_word(struct kmalloc43_pcpu_locks *l);
u32 *kmalloc43_c_pcpu_sync_word(struct kmalloc43_pcpu_locks *l)
{
	return &l->sync;
}

static void kmalloc43_pcpu_sync_func(struct rcu_head *rcu)
{
	kmalloc43_rust_pcpu_sync_passed(container_of(rcu, struct kmalloc43_pcpu_locks, sync_rcu));
}

/* GracePeriod::call_after: SlotSync::passed a grace period from now (any context). */
void kmalloc43_c_pcpu_sync_call(struct kmalloc43_pcpu_locks *l);
void kmalloc43_c_pcpu_sync_call(struct kmalloc43_pcpu_locks *l)
{
	call_rcu(&l->sync_rcu, kmalloc43_pcpu_sync_func);
}

/* GracePeriod::synchronize (task context). */
void kmalloc43_c_synchronize_rcu(void);
void kmalloc43_c_synchronize_rcu(void)
{
	synchronize_rcu();
}

/*
 * An atomic-context reader found fast mode (it cannot wait for a grace period): slow mode is
 * entered from a work item and held for KMALLOC43_KICK_HOLD, so that its next try finds it.
 */
void kmalloc43_c_pcpu_kick(struct kmalloc43_pcpu_locks *l);
void kmalloc43_c_pcpu_kick(struct kmalloc43_pcpu_locks *l)
{
	queue_delayed_work(system_dfl_wq, &l->kick, 0);
}

/*
 * Whether the caller may sleep: an exact reader waits for slow mode then, else it only tries
 * (preemptible() needs the preemption count: without it, never; nor inside rcu_read_lock(),
 * where a grace period would wait for the caller).
 */
bool kmalloc43_c_may_sleep(void);
bool kmalloc43_c_may_sleep(void)
{
	return IS_ENABLED(CONFIG_PREEMPT_COUNT) && preemptible() && !rcu_preempt_depth();
}

void kmalloc43_c_pcpu_lock_word_slow(u32 *word, bool task_only);
void kmalloc43_c_pcpu_lock_word_slow(u32 *word, bool task_only)
{
	WARN_ON_ONCE(task_only && !in_task());
	arch_spin_lock((arch_spinlock_t *)word);
}

/* The cold branch of the inline preempt_enable(): the count reached zero. */
void kmalloc43_c_preempt_schedule(void);
void kmalloc43_c_preempt_schedule(void)
{
#ifdef CONFIG_PREEMPTION
	__preempt_schedule();
#endif
}

/* Locks every CPU's slot, interrupts disabled; returns the CPU it runs on. */
unsigned int kmalloc43_c_pcpu_lock_all(struct kmalloc43_pcpu_locks *l);
unsigned int kmalloc43_c_pcpu_lock_all(struct kmalloc43_pcpu_locks *l)
{
	unsigned long flags;
	int cpu;

	/* Waits: task context only for PREEMPT_OFF slots (kmalloc43_c_pcpu_trylock_all() else). */
	WARN_ON_ONCE(l->flavour == KMALLOC43_PCPU_PREEMPT_OFF && !in_task());
	spin_lock_irqsave(&l->all, flags);
	l->all_flags = flags;
	for_each_possible_cpu(cpu) {
		struct kmalloc43_pcpu_slot *s = l->slot[cpu];

		spin_acquire_nest(&s->lock.dep_map, 0, 0, &l->all.dep_map, _RET_IP_);
		arch_spin_lock(&s->lock.rlock.raw_lock);
	}
	return smp_processor_id();
}

/* Unlocks the slots of the CPUs below @end that kmalloc43_c_pcpu_(try)lock_all() took. */
static void kmalloc43_unlock_slots(struct kmalloc43_pcpu_locks *l, unsigned int end)
{
	unsigned int cpu;

	for_each_possible_cpu(cpu) {
		struct kmalloc43_pcpu_slot *s = l->slot[cpu];

		if (cpu >= end)
			break;
		spin_release(&s->lock.dep_map, _RET_IP_);
		arch_spin_unlock(&s->lock.rlock.raw_lock);
	}
}

/*
 * kmalloc43_c_pcpu_lock_all() for a caller that must not wait for a slot (outside task
 * context: a holder may be the code this interrupt interrupted, or a remote all-slot holder
 * waiting for such a slot): 'all' and every CPU's slot tried once, in the same order, nothing
 * kept if any is held.  The CPU it runs on, or UINT_MAX if something was held.  Trylocks: lockdep
 * records no hardirq use of the classes for them, as for local_trylock().
 */
unsigned int kmalloc43_c_pcpu_trylock_all(struct kmalloc43_pcpu_locks *l);
unsigned int kmalloc43_c_pcpu_trylock_all(struct kmalloc43_pcpu_locks *l)
{
	unsigned long flags;
	unsigned int cpu;

	if (!spin_trylock_irqsave(&l->all, flags))
		return UINT_MAX;
	for_each_possible_cpu(cpu) {
		struct kmalloc43_pcpu_slot *s = l->slot[cpu];

		if (!arch_spin_trylock(&s->lock.rlock.raw_lock)) {
			kmalloc43_unlock_slots(l, cpu);
			spin_unlock_irqrestore(&l->all, flags);
			return UINT_MAX;
		}
		spin_acquire_nest(&s->lock.dep_map, 0, 1, &l->all.dep_map, _RET_IP_);
	}
	l->all_flags = flags;
	return smp_processor_id();
}

void kmalloc43_c_pcpu_unlock_all(struct kmalloc43_pcpu_locks *l);
void kmalloc43_c_pcpu_unlock_all(struct kmalloc43_pcpu_locks *l)
{
	unsigned long flags = l->all_flags;

	kmalloc43_unlock_slots(l, nr_cpu_ids);
	spin_unlock_irqrestore(&l->all, flags);
}

/*
 * Locks CPU @cpu's slot from whichever CPU the caller runs on (rust/glue/percpu.rs,
 * PerCpu::lock_cpu: a periodic pass visiting each CPU's slot in turn), preemption or local
 * interrupts disabled on the caller's CPU, the saved state kept in the slot as the local lock
 * does.  A wait: task context only for a PREEMPT_OFF slot.  False, nothing taken, if @cpu is
 * not a possible CPU.  To @cpu's own paths the holder is like a lock_all() holder on another
 * CPU: it runs with preemption off and waits for none of them.
 */
bool kmalloc43_c_pcpu_lock_cpu(struct kmalloc43_pcpu_locks *l, unsigned int cpu);
bool kmalloc43_c_pcpu_lock_cpu(struct kmalloc43_pcpu_locks *l, unsigned int cpu)
{
	struct kmalloc43_pcpu_slot *s;
	unsigned long flags = 0;

	if (cpu >= nr_cpu_ids || !cpu_possible(cpu))
		return false;
	WARN_ON_ONCE(l->flavour == KMALLOC43_PCPU_PREEMPT_OFF && !in_task());
	kmalloc43_slot_enter(l, &flags);
	s = l->slot[cpu];
	spin_acquire(&s->lock.dep_map, 0, 0, _RET_IP_);
	arch_spin_lock(&s->lock.rlock.raw_lock);
	s->flags = flags;
	return true;
}

/* Unlocks what kmalloc43_c_pcpu_lock_cpu() locked (on the CPU that locked it). */
void kmalloc43_c_pcpu_unlock_cpu(struct kmalloc43_pcpu_locks *l, unsigned int cpu);
void kmalloc43_c_pcpu_unlock_cpu(struct kmalloc43_pcpu_locks *l, unsigned int cpu)
{
	kmalloc43_c_pcpu_unlock_local(l, cpu);
}

unsigned int kmalloc43_c_nr_cpu_ids(void);
unsigned int kmalloc43_c_nr_cpu_ids(void)
{
	return nr_cpu_ids;
}

/*
 * ---- page hints (rust/glue/hint.rs) ----
 *
 * The word page->private of each page the malloc core holds carries a hint of
 * its usage record, so that free finds a piece's size class in O(1) without
 * the page map's hash and without the heap lock.  The pages are the heap's own
 * (non-compound allocations of the page allocator), so the field is free to use
 * until they are given back; it is cleared before that.
 */
/*
 * Which pages carry a hint of ours: one bit per page frame of the direct map as it was when the
 * first heap was created ([PAGE_OFFSET, high_memory); the heap's pages come from the page
 * allocator without __GFP_HIGHMEM, so they are all in the direct map), set and cleared with the
 * hint itself.  free's fast path tests one bit instead of asking pfn_valid() whether the address
 * has a struct page at all (about 35 instructions on every free, with its
 * rcu_read_lock_sched()): a set bit means the page is ours, so its struct page exists.  A page
 * past the bitmap (memory hot-added later) gets a hint but no bit: its frees take the slow path,
 * which finds the class in the page map.  The bits of all heaps share one bitmap (a page is one
 * heap's at a time), allocated with the first heap's per-CPU locks and freed with the last one's:
 * size (high_memory - PAGE_OFFSET) / PAGE_SIZE / 8 bytes, 16 KiB for 512 MiB.
 */
static DEFINE_MUTEX(kmalloc43_ours_mutex);
static unsigned int kmalloc43_ours_users;
/*
 * Everything a hint read needs, in one cache line of the module's data: the bitmap and its
 * length, and copies of the two kernel variables that place the direct map and the memmap
 * (page_offset_base and vmemmap_base under KASLR, constant after boot).  Read inline by
 * rust/glue/hint.rs (raw_page_hint, its HintMap) where it is built with kmalloc43_inline_page_hint:
 * with the copies, free's fast path touches one page of data for them instead of two (the
 * module's and the kernel's), which matters under TCG, where every distinct page of a pair may
 * conflict with another in the emulated TLB (Documentation/performance.rst).  Set before the
 * first heap can hand out a piece, cleared after the last one is gone.
 */
struct kmalloc43_hint_map {
	unsigned long *ours;
	unsigned long bits;
	unsigned long page_offset;
	unsigned long memmap;
};
static_assert(sizeof(struct kmalloc43_hint_map) == 4 * sizeof(long));
static_assert(offsetof(struct kmalloc43_hint_map, memmap) == 3 * sizeof(long));

/*
 * What the fast paths read of the module's own data, on one cache line and so one page
 * (Documentation/performance.rst, "Fewer pages per pair"): the published service and its heap
 * and type registry and the heap's own fast words (rust/glue/service.rs, FastStatics, which has
 * the same layout), and the hint map above; 128-byte aligned, so it never straddles a page.
 */
struct kmalloc43_fast {
	void *service;
	void *heap;
	void *types;
	unsigned long front[4];	/* the heap's fast words (Rust's FrontRef) */
	struct kmalloc43_hint_map hint;
};
static_assert(sizeof(struct kmalloc43_fast) == 11 * sizeof(long));
struct kmalloc43_fast kmalloc43_fast __aligned(128);

static int kmalloc43_ours_get(void)
{
	int ret = 0;

	mutex_lock(&kmalloc43_ours_mutex);
	if (!kmalloc43_ours_users) {
		unsigned long bits = ((unsigned long)high_memory - PAGE_OFFSET) >> PAGE_SHIFT;
		unsigned long *map = vzalloc(BITS_TO_LONGS(bits) * sizeof(long));

		if (!map) {
			ret = -ENOMEM;
			goto out;
		}
		kmalloc43_fast.hint.ours = map;
		kmalloc43_fast.hint.bits = bits;
		kmalloc43_fast.hint.page_offset = PAGE_OFFSET;
#ifdef CONFIG_SPARSEMEM_VMEMMAP
		kmalloc43_fast.hint.memmap = (unsigned long)vmemmap;
#endif
	}
	kmalloc43_ours_users++;
out:
	mutex_unlock(&kmalloc43_ours_mutex);
	return ret;
}

static void kmalloc43_ours_put(void)
{
	mutex_lock(&kmalloc43_ours_mutex);
	if (!--kmalloc43_ours_users) {
		/* Every heap is gone: no hint is read or written any more. */
		vfree(kmalloc43_fast.hint.ours);
		kmalloc43_fast.hint = (struct kmalloc43_hint_map){ };
	}
	mutex_unlock(&kmalloc43_ours_mutex);
}

/*
 * The hint of the page holding @addr, 0 unless the page is one of ours.  Callers hold an RCU
 * read-side section (preemption or interrupts off, or rcu_read_lock()) across it: a page whose
 * bit was set when tested is still ours when its private is read (its give-back waits for a grace
 * period), so private holds a hint of ours or 0.
 */
static __always_inline unsigned long kmalloc43_hint_of(unsigned long addr)
{
	/* An address below PAGE_OFFSET wraps to a huge frame number, past the bitmap. */
	unsigned long pfn = (addr - PAGE_OFFSET) >> PAGE_SHIFT;

	if (pfn >= kmalloc43_fast.hint.bits || !test_bit(pfn, kmalloc43_fast.hint.ours))
		return 0;
	return READ_ONCE(virt_to_page((void *)addr)->private);
}

unsigned long kmalloc43_c_page_hint(unsigned long addr);
unsigned long kmalloc43_c_page_hint(unsigned long addr)
{
	return kmalloc43_hint_of(addr);
}

/*
 * free's fast path in one call instead of two: this CPU's slot tried (as
 * kmalloc43_c_pcpu_trylock_local()), then the hint of @addr's page (as kmalloc43_c_page_hint()),
 * read with preemption off under the slot: an RCU read-side section, which the page's give-back
 * waits for (rust/glue/hint.rs says why the hint then needs no check word).  Returned in two
 * registers.
 */
struct kmalloc43_hint_cpu {
	unsigned long hint;
	unsigned int cpu;
};

/* This CPU's slot tried (kmalloc43_c_pcpu_trylock_local(): cpu UINT_MAX if it was held), then
 * the page hint of @addr (kmalloc43_c_page_hint()), under the slot or, if it was held, under
 * rcu_read_lock().  Two registers. */
struct kmalloc43_hint_cpu kmalloc43_c_pcpu_trylock_local_hint(struct kmalloc43_pcpu_locks *l,
							      unsigned long addr);
struct kmalloc43_hint_cpu kmalloc43_c_pcpu_trylock_local_hint(struct kmalloc43_pcpu_locks *l,
							      unsigned long addr)
{
	struct kmalloc43_hint_cpu r = { .cpu = kmalloc43_trylock_local(l, _RET_IP_) };

	if (r.cpu != UINT_MAX) {
		r.hint = kmalloc43_hint_of(addr);
	} else {
		rcu_read_lock();
		r.hint = kmalloc43_hint_of(addr);
		rcu_read_unlock();
	}
	return r;
}

void kmalloc43_c_set_page_hint(unsigned long addr, unsigned long hint);
void kmalloc43_c_set_page_hint(unsigned long addr, unsigned long hint)
{
	unsigned long pfn = (addr - PAGE_OFFSET) >> PAGE_SHIFT;

	/*
	 * Bit after hint when setting, before it when clearing: a reader that sees the bit sees
	 * a hint of ours or 0 (0 is no code: every reader refuses it).  Atomic bit operations: two
	 * heaps' pages may share a word of the bitmap; set_bit() and clear_bit() order nothing by
	 * themselves, hence the barriers (no-ops on x86, where they are locked instructions).  A
	 * cleared page goes back to the page allocator only after an RCU grace period
	 * (rust/glue/pages.rs, ChunkList::give_back).
	 */
	if (!hint && pfn < kmalloc43_fast.hint.bits) {
		clear_bit(pfn, kmalloc43_fast.hint.ours);
		smp_mb__after_atomic();
	}
	WRITE_ONCE(virt_to_page((void *)addr)->private, hint);
	if (hint && pfn < kmalloc43_fast.hint.bits) {
		smp_mb__before_atomic();
		set_bit(pfn, kmalloc43_fast.hint.ours);
	}
}

/*
 * KUnit only (rust/glue/pages_kunit.rs): writes @v into private of the page holding @addr, a page
 * of the caller's that carries no hint, leaving the bitmap alone; returns the old value.  A
 * forged hint: what another owner's private may hold.
 */
unsigned long kmalloc43_c_swap_page_private(unsigned long addr, unsigned long v);
unsigned long kmalloc43_c_swap_page_private(unsigned long addr, unsigned long v)
{
	struct page *page = virt_to_page((void *)addr);
	unsigned long old = page->private;

	WRITE_ONCE(page->private, v);
	return old;
}

/*
 * ---- test helpers (rust/glue/kunit_magazines.rs) ----
 *
 * kmalloc43_c_start_on_cpus() runs fn(arg, cpu) at once on every online CPU,
 * each in a kthread bound to its CPU; kmalloc43_c_wait_on_cpus() waits for
 * all of them.  kmalloc43_c_irq_work_*() run fn(arg) in hardirq context (an
 * irq_work in the default mode: hard interrupt context on !PREEMPT_RT, where
 * lockdep accepts spinlock_t).
 */
struct kmalloc43_on_cpu {
	int (*fn)(void *arg, unsigned int cpu);
	void *arg;
	unsigned int cpu;
	int ret;
	atomic_t *left;
	struct completion *done;
};

struct kmalloc43_on_cpus {
	atomic_t left;
	struct completion done;
	unsigned int n;
	struct kmalloc43_on_cpu one[];
};

static int kmalloc43_on_cpu_thread(void *p)
{
	struct kmalloc43_on_cpu *o = p;

	o->ret = o->fn(o->arg, o->cpu);
	if (atomic_dec_and_test(o->left))
		complete(o->done);
	return 0;
}

struct kmalloc43_on_cpus *kmalloc43_c_start_on_cpus(int (*fn)(void *, unsigned int), void *arg);
struct kmalloc43_on_cpus *kmalloc43_c_start_on_cpus(int (*fn)(void *, unsigned int), void *arg)
{
	struct kmalloc43_on_cpus *r;
	unsigned int cpu, i = 0;

	cpus_read_lock();
	r = kzalloc(struct_size(r, one, num_online_cpus()), GFP_KERNEL);
	if (!r) {
		cpus_read_unlock();
		return NULL;
	}
	r->n = num_online_cpus();
	atomic_set(&r->left, r->n);
	init_completion(&r->done);
	for_each_online_cpu(cpu) {
		struct kmalloc43_on_cpu *o = &r->one[i++];
		struct task_struct *t;

		*o = (struct kmalloc43_on_cpu){ .fn = fn, .arg = arg, .cpu = cpu,
						.left = &r->left, .done = &r->done };
		t = kthread_create_on_cpu(kmalloc43_on_cpu_thread, o, cpu, "kmalloc43/%u");
		if (IS_ERR(t)) {
			o->ret = PTR_ERR(t);
			if (atomic_dec_and_test(&r->left))
				complete(&r->done);
			continue;
		}
		wake_up_process(t);
	}
	cpus_read_unlock();
	return r;
}

/* Waits for every thread; returns the first non-zero result and frees r. */
int kmalloc43_c_wait_on_cpus(struct kmalloc43_on_cpus *r);
int kmalloc43_c_wait_on_cpus(struct kmalloc43_on_cpus *r)
{
	unsigned int i;
	int ret = 0;

	wait_for_completion(&r->done);
	for (i = 0; i < r->n; i++)
		if (!ret)
			ret = r->one[i].ret;
	kfree(r);
	return ret;
}

/* Whether every thread of r finished (for a sampler polling between waits). */
bool kmalloc43_c_on_cpus_done(struct kmalloc43_on_cpus *r);
bool kmalloc43_c_on_cpus_done(struct kmalloc43_on_cpus *r)
{
	return completion_done(&r->done);
}

struct kmalloc43_irqw {
	struct irq_work w;
	void (*fn)(void *arg);
	void *arg;
};

static void kmalloc43_irqw_fn(struct irq_work *w)
{
	struct kmalloc43_irqw *k = container_of(w, struct kmalloc43_irqw, w);

	WARN_ON_ONCE(!in_hardirq());
	k->fn(k->arg);
}

struct kmalloc43_irqw *kmalloc43_c_irq_work_new(void (*fn)(void *), void *arg);
struct kmalloc43_irqw *kmalloc43_c_irq_work_new(void (*fn)(void *), void *arg)
{
	struct kmalloc43_irqw *k = kzalloc(sizeof(*k), GFP_KERNEL);

	if (!k)
		return NULL;
	init_irq_work(&k->w, kmalloc43_irqw_fn);
	k->fn = fn;
	k->arg = arg;
	return k;
}

bool kmalloc43_c_irq_work_queue(struct kmalloc43_irqw *k);
bool kmalloc43_c_irq_work_queue(struct kmalloc43_irqw *k)
{
	return irq_work_queue(&k->w);
}

void kmalloc43_c_irq_work_free(struct kmalloc43_irqw *k);
void kmalloc43_c_irq_work_free(struct kmalloc43_irqw *k)
{
	irq_work_sync(&k->w);
	kfree(k);
}

/*
 * kmalloc43_c_run_in_context() runs fn(arg) once in the calling context a KUnit case names
 * (rust/glue/context_kunit.rs: the contexts kmalloc43.h promises NOWAIT malloc, free and
 * usable_size work in), waits for it on a completion (at most 10 s, which only fails the test)
 * and returns what the callback saw (KM43_SEEN_* bits), or -ETIMEDOUT / -EINVAL / -ENOMEM.
 *   0  process context, preemption disabled;
 *   1  process context under a spinlock_t taken with spin_lock_irqsave();
 *   2  softirq (a work item on system_bh_wq);
 *   3  hardirq: an hrtimer in the default mode (HRTIMER_MODE_REL, not _HARD);
 *   4  hardirq: an irq_work in the default mode.
 */
#define KM43_SEEN_HARDIRQ	0x1u
#define KM43_SEEN_SOFTIRQ	0x2u
#define KM43_SEEN_IRQS_OFF	0x4u
#define KM43_SEEN_ATOMIC	0x8u

struct kmalloc43_ctx_run {
	void (*fn)(void *arg);
	void *arg;
	unsigned int seen;
	struct completion done;
	struct hrtimer timer;
	struct irq_work iw;
	struct work_struct bh;
};

static void kmalloc43_ctx_call(struct kmalloc43_ctx_run *r)
{
	r->seen = (in_hardirq() ? KM43_SEEN_HARDIRQ : 0) |
		  (in_serving_softirq() ? KM43_SEEN_SOFTIRQ : 0) |
		  (irqs_disabled() ? KM43_SEEN_IRQS_OFF : 0) |
		  (!preemptible() ? KM43_SEEN_ATOMIC : 0);
	r->fn(r->arg);
	complete(&r->done);
}

static enum hrtimer_restart kmalloc43_ctx_timer(struct hrtimer *t)
{
	kmalloc43_ctx_call(container_of(t, struct kmalloc43_ctx_run, timer));
	return HRTIMER_NORESTART;
}

static void kmalloc43_ctx_irq_work(struct irq_work *w)
{
	kmalloc43_ctx_call(container_of(w, struct kmalloc43_ctx_run, iw));
}

static void kmalloc43_ctx_bh(struct work_struct *w)
{
	kmalloc43_ctx_call(container_of(w, struct kmalloc43_ctx_run, bh));
}

int kmalloc43_c_run_in_context(unsigned int ctx, void (*fn)(void *), void *arg);
int kmalloc43_c_run_in_context(unsigned int ctx, void (*fn)(void *), void *arg)
{
	static DEFINE_SPINLOCK(lock);
	struct kmalloc43_ctx_run *r;
	unsigned long flags;
	int ret;

	if (ctx > 4)
		return -EINVAL;
	r = kzalloc(sizeof(*r), GFP_KERNEL);
	if (!r)
		return -ENOMEM;
	r->fn = fn;
	r->arg = arg;
	init_completion(&r->done);
	hrtimer_setup(&r->timer, kmalloc43_ctx_timer, CLOCK_MONOTONIC, HRTIMER_MODE_REL);
	init_irq_work(&r->iw, kmalloc43_ctx_irq_work);
	INIT_WORK(&r->bh, kmalloc43_ctx_bh);
	switch (ctx) {
	case 0:
		preempt_disable();
		kmalloc43_ctx_call(r);
		preempt_enable();
		break;
	case 1:
		spin_lock_irqsave(&lock, flags);
		kmalloc43_ctx_call(r);
		spin_unlock_irqrestore(&lock, flags);
		break;
	case 2:
		queue_work(system_bh_wq, &r->bh);
		break;
	case 3:
		hrtimer_start(&r->timer, 0, HRTIMER_MODE_REL);
		break;
	case 4:
		irq_work_queue(&r->iw);
		break;
	}
	ret = wait_for_completion_timeout(&r->done, 10 * HZ) ? (int)r->seen : -ETIMEDOUT;
	/* Nothing may run on r once it is freed. */
	hrtimer_cancel(&r->timer);
	irq_work_sync(&r->iw);
	cancel_work_sync(&r->bh);
	kfree(r);
	return ret;
}

/*
 * kmemleak (CONFIG_DEBUG_KMEMLEAK; empty inline functions otherwise): every piece and large run
 * kmalloc43 hands to a client is a kmemleak object from malloc until free, as SLUB's objects are
 * (min_count 1: reported when nothing references it), so kmemleak scans it for pointers and
 * reports it if it leaks.  Pieces resting in magazines, depots and free lists are not objects.
 * The pages kmalloc43 takes for itself come from the page allocator, which kmemleak does not
 * track, so metadata is never reported.  GFP_ATOMIC: callers may hold spinlocks.
 */
void kmalloc43_c_kmemleak_alloc(const void *ptr, size_t size);
void kmalloc43_c_kmemleak_alloc(const void *ptr, size_t size)
{
	kmemleak_alloc(ptr, size, 1, GFP_ATOMIC);
}

void kmalloc43_c_kmemleak_free(const void *ptr);
void kmalloc43_c_kmemleak_free(const void *ptr)
{
	kmemleak_free(ptr);
}

void kmalloc43_c_kmemleak_not_leak(const void *ptr);
void kmalloc43_c_kmemleak_not_leak(const void *ptr)
{
	kmemleak_not_leak(ptr);
}

/* ---- shrinker (rust/glue/shrinker.rs): the shrinker API is C-only ---- */

unsigned long kmalloc43_rust_shrink_count(const void *heap);
unsigned long kmalloc43_rust_shrink_scan(const void *heap);

static unsigned long kmalloc43_shrink_count(struct shrinker *s, struct shrink_control *sc)
{
	return kmalloc43_rust_shrink_count(s->private_data);
}

static unsigned long kmalloc43_shrink_scan(struct shrinker *s, struct shrink_control *sc)
{
	/* One pass gives back everything counted, whatever sc->nr_to_scan. */
	unsigned long freed = kmalloc43_rust_shrink_scan(s->private_data);

	/* Nothing freed (or another pass is running): no progress to make now. */
	return freed ? freed : SHRINK_STOP;
}

/*
 * A registered shrinker for the heap @data. Its objects are free pages, which cost nothing
 * to recreate (seeks 0: reclaim asks for half of them per pass, at any priority), and one
 * pass gives all of them back (batch 1: a pass runs for any count).
 */
struct shrinker *kmalloc43_c_shrinker_new(void *data, const char *name);
struct shrinker *kmalloc43_c_shrinker_new(void *data, const char *name)
{
	struct shrinker *s = shrinker_alloc(0, "%s", name);

	if (!s)
		return NULL;
	s->count_objects = kmalloc43_shrink_count;
	s->scan_objects = kmalloc43_shrink_scan;
	s->private_data = data;
	s->seeks = 0;
	s->batch = 1;
	shrinker_register(s);
	return s;
}

/* Unregisters and frees @s; returns after every running callback finished. */
void kmalloc43_c_shrinker_free(struct shrinker *s);
void kmalloc43_c_shrinker_free(struct shrinker *s)
{
	shrinker_free(s);
}

/* ---- timed aging (rust/glue/aging.rs): a deferrable delayed work ---- */

void kmalloc43_rust_aging_run(const void *heap);

/*
 * The timed aging pass of a heap (Documentation/magazines.rst, "Timed aging"): a deferrable
 * delayed work on the unbound system workqueue that runs the pass (in Rust) every @secs seconds
 * (0: off).  @lock orders the interval's changes and the work's requeueing, so that once a
 * writer set 0 and the call returned, no pass is queued again; unload disables the work and
 * waits for a running pass before the heap goes.
 */
struct kmalloc43_aging {
	struct delayed_work work;
	spinlock_t lock;
	unsigned int secs;
	const void *heap;
};

static unsigned long kmalloc43_aging_delay(unsigned int secs)
{
	return msecs_to_jiffies(secs * MSEC_PER_SEC);
}

static void kmalloc43_aging_fn(struct work_struct *w)
{
	struct kmalloc43_aging *a = container_of(to_delayed_work(w), struct kmalloc43_aging, work);

	kmalloc43_rust_aging_run(a->heap);
	spin_lock(&a->lock);
	/* A pending run (a writer's) stays as it is; a disabled work is not queued. */
	if (a->secs)
		queue_delayed_work(system_dfl_wq, &a->work, kmalloc43_aging_delay(a->secs));
	spin_unlock(&a->lock);
}

/* The timed pass of @heap every @secs seconds (0: off), first after @secs. */
struct kmalloc43_aging *kmalloc43_c_aging_new(const void *heap, unsigned int secs);
struct kmalloc43_aging *kmalloc43_c_aging_new(const void *heap, unsigned int secs)
{
	struct kmalloc43_aging *a = kzalloc(sizeof(*a), GFP_KERNEL);

	if (!a)
		return NULL;
	INIT_DEFERRABLE_WORK(&a->work, kmalloc43_aging_fn);
	spin_lock_init(&a->lock);
	a->heap = heap;
	a->secs = secs;
	if (secs)
		queue_delayed_work(system_dfl_wq, &a->work, kmalloc43_aging_delay(secs));
	return a;
}

/* The interval in seconds (0: off). */
unsigned int kmalloc43_c_aging_interval(struct kmalloc43_aging *a);
unsigned int kmalloc43_c_aging_interval(struct kmalloc43_aging *a)
{
	return READ_ONCE(a->secs);
}

/* Sets the interval: the next pass @secs seconds from now, or none (0). */
void kmalloc43_c_aging_set(struct kmalloc43_aging *a, unsigned int secs);
void kmalloc43_c_aging_set(struct kmalloc43_aging *a, unsigned int secs)
{
	spin_lock(&a->lock);
	WRITE_ONCE(a->secs, secs);
	if (secs)
		mod_delayed_work(system_dfl_wq, &a->work, kmalloc43_aging_delay(secs));
	else
		cancel_delayed_work(&a->work);
	spin_unlock(&a->lock);
}

/* Stops the work for good (a running pass finished first) and frees it. */
void kmalloc43_c_aging_free(struct kmalloc43_aging *a);
void kmalloc43_c_aging_free(struct kmalloc43_aging *a)
{
	disable_delayed_work_sync(&a->work);
	kfree(a);
}

/*
 * Real memory pressure for the shrinker's KUnit case (rust/glue/shrinker_kunit.rs): takes
 * pages with GFP_KERNEL | __GFP_RETRY_MAYFAIL | __GFP_NOWARN (direct reclaim, never the OOM
 * killer) until @done(@arg) says reclaim did what the test waits for, then gives every page
 * back.  A refused page is not a failure: the hog backs off (gives its last
 * KMALLOC43_HOG_BACKOFF pages back, so that the rest of the system is not starved, and sleeps
 * briefly, so that kswapd and other reclaimers run) and tries again, staying at the edge of
 * memory where reclaim calls the shrinkers.  Returns the pages held when @done became true, or
 * -ETIMEDOUT if it did not within @timeout_s seconds (the bound only fails the test; the
 * verdict is @done's state).  *@refusals counts the refused pages.
 */
#define KMALLOC43_HOG_BACKOFF 64

long kmalloc43_c_pressure_hog(bool (*done)(void *), void *arg, unsigned long max,
			      unsigned int timeout_s, unsigned long *refusals);
long kmalloc43_c_pressure_hog(bool (*done)(void *), void *arg, unsigned long max,
			      unsigned int timeout_s, unsigned long *refusals)
{
	unsigned long deadline = jiffies + (unsigned long)timeout_s * HZ;
	LIST_HEAD(held);
	struct page *page, *next;
	unsigned long n = 0;
	long ret;
	int i;

	*refusals = 0;
	for (;;) {
		if (done(arg)) {
			ret = n;
			break;
		}
		if (time_after(jiffies, deadline)) {
			ret = -ETIMEDOUT;
			break;
		}
		page = n < max ? alloc_page(GFP_KERNEL | __GFP_RETRY_MAYFAIL | __GFP_NOWARN) : NULL;
		if (page) {
			list_add(&page->lru, &held);
			n++;
			if (!(n & 1023))
				cond_resched();
			continue;
		}
		/* Refused: back off a little, let reclaim run, stay at the edge. */
		(*refusals)++;
		for (i = 0; i < KMALLOC43_HOG_BACKOFF && !list_empty(&held); i++) {
			page = list_first_entry(&held, struct page, lru);
			list_del(&page->lru);
			__free_page(page);
			n--;
		}
		msleep(10);
	}
	list_for_each_entry_safe(page, next, &held, lru) {
		list_del(&page->lru);
		__free_page(page);
	}
	return ret;
}

/*
 * ---- client ownership (rust/glue/owners.rs) ----
 *
 * Types and arenas record the module that owns them.  A module notifier (the module notifier API
 * is C-only) tells the Rust side when a module goes (MODULE_STATE_GOING: after its exit function,
 * or after its init failed, before its memory is freed), so that nothing the module left behind
 * keeps pointing into it: its types are undefined or orphaned, its arenas disowned (no function
 * of the module is called again).
 */
void kmalloc43_rust_module_going(const void *mod, const char *name);

static int kmalloc43_module_notify(struct notifier_block *nb, unsigned long action, void *data)
{
	struct module *mod = data;

	if (action == MODULE_STATE_GOING)
		kmalloc43_rust_module_going(mod, mod->name);
	return NOTIFY_DONE;
}

static struct notifier_block kmalloc43_module_nb = {
	.notifier_call = kmalloc43_module_notify,
};

int kmalloc43_c_module_notifier_register(void);
int kmalloc43_c_module_notifier_register(void)
{
	return register_module_notifier(&kmalloc43_module_nb);
}

/* Returns after every running notification finished (the chain's rwsem). */
void kmalloc43_c_module_notifier_unregister(void);
void kmalloc43_c_module_notifier_unregister(void)
{
	unregister_module_notifier(&kmalloc43_module_nb);
}

/* Whether @addr lies in @mod's code or data (its memory is still there during GOING). */
bool kmalloc43_c_within_module(unsigned long addr, const void *mod);
bool kmalloc43_c_within_module(unsigned long addr, const void *mod)
{
	return within_module(addr, (const struct module *)mod);
}

/* @mod's name (the module's own copy: read it while the module is loaded or going). */
const char *kmalloc43_c_module_name(const void *mod);
const char *kmalloc43_c_module_name(const void *mod)
{
	return module_name((struct module *)mod);
}

/* ---- implemented in Rust (kmalloc43_main.rs, rust/glue/abi.rs) ---- */

int kmalloc43_rust_type_define(struct kmalloc43_type *type);
int kmalloc43_rust_type_undefine(struct kmalloc43_type *type);
void *kmalloc43_rust_realloc(void *addr, size_t size, struct kmalloc43_type *type,
			     unsigned int flags);
size_t kmalloc43_rust_usable_size(const void *addr);
int kmalloc43_rust_totals(struct kmalloc43_totals *out);
int kmalloc43_rust_age(struct kmalloc43_aged *out);
int kmalloc43_rust_type_stats(struct kmalloc43_type *type, struct kmalloc43_type_stats *out);
int kmalloc43_rust_vmem_create(struct module *owner, const char *name, unsigned long base,
			       size_t size, size_t quantum, kmalloc43_vmem_import_t import,
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

/*
 * kmalloc43_malloc() and kmalloc43_free() are the Rust functions themselves (rust/glue/abi.rs,
 * of the header's prototypes: rust/glue/abi_check.rs), exported here from the header's
 * declarations: no C wrapper on the fast path (Documentation/performance.rst). free(NULL)
 * returns 0 on the Rust side.
 */
EXPORT_SYMBOL_GPL(kmalloc43_malloc);
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

int kmalloc43_age(struct kmalloc43_aged *out)
{
	might_sleep();
	return kmalloc43_rust_age(out);
}
EXPORT_SYMBOL_GPL(kmalloc43_age);

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

struct kmalloc43_vmem *kmalloc43_vmem_create_owned(struct module *owner, const char *name,
						   unsigned long base, size_t size, size_t quantum,
						   kmalloc43_vmem_import_t import,
						   kmalloc43_vmem_release_t release, void *source,
						   size_t qcache_max, unsigned int flags)
{
	struct kmalloc43_vmem *vm = NULL;
	int ret = kmalloc43_rust_vmem_create(owner, name, base, size, quantum, import, release,
					     source, qcache_max, flags, &vm);

	return ret ? ERR_PTR(ret) : vm;
}
EXPORT_SYMBOL_GPL(kmalloc43_vmem_create_owned);

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

/* vmem's constant-time pair on pages of its own: rust/glue/abi.rs, .text.kmalloc43_vmem. */
__section(".text.kmalloc43_vmem")
int kmalloc43_vmem_xalloc(struct kmalloc43_vmem *vm, size_t size, size_t align, size_t phase,
			  size_t nocross, unsigned long minaddr, unsigned long maxaddr,
			  unsigned int flags, unsigned long *addr)
{
	return kmalloc43_rust_vmem_xalloc(vm, size, align, phase, nocross, minaddr, maxaddr,
					  flags, addr);
}
EXPORT_SYMBOL_GPL(kmalloc43_vmem_xalloc);

__section(".text.kmalloc43_vmem")
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
