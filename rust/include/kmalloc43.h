/* SPDX-License-Identifier: GPL-2.0 */
/*
 * kmalloc43: the C interface that kmalloc43.ko exports (EXPORT_SYMBOL_GPL) to other modules.
 *
 * Contexts: calls marked "may sleep" need process context with no spinlock held (checked with
 * might_sleep()).  KM43_NOWAIT malloc/realloc, free, usable_size, type_stats, totals,
 * KM43_VM_NOSLEEP vmem allocations and vmem free/xfree/walk/size work where kmalloc(GFP_ATOMIC)
 * and kfree() work: process and softirq context, hardirq context (interrupt handlers, irq_work
 * and hrtimer callbacks in the default mode), with interrupts disabled, under a spinlock_t.
 * Their locks are spinlock_t, as SLUB's are, so, like kmalloc(), they must NOT be called under
 * a raw_spinlock_t, in an HRTIMER_MODE_*_HARD callback or an IRQ_WORK_HARD_IRQ irq_work (on
 * PREEMPT_RT those stay atomic while spinlock_t sleeps; lockdep reports "BUG: Invalid wait
 * context" there on any kernel), nor from NMI context.
 * Documentation/linux.rst describes the design.
 */
#ifndef _KMALLOC43_H
#define _KMALLOC43_H

#include <linux/types.h>

/* ---- BSD malloc -------------------------------------------------------------------------- */

/* Flags of kmalloc43_malloc()/kmalloc43_realloc(): exactly one of WAITOK/NOWAIT, optionally ZERO.
 * This header is the one source of truth of the ABI: the module and the Rust clients read it
 * through bindgen at build time, and the module's build fails if the core's MallocFlags or any
 * Rust implementation disagrees with it (rust/glue/abi_check.rs). */
#define KM43_WAITOK	0x0001u	/* may sleep (process context, no locks held) */
#define KM43_NOWAIT	0x0002u	/* never sleeps; usable in atomic context */
#define KM43_ZERO	0x0004u	/* zero the memory */

struct module;

/*
 * A malloc type, like FreeBSD's struct malloc_type: lives in the client module (static storage),
 * registered with kmalloc43_type_define() at module init and removed with
 * kmalloc43_type_undefine() before the module unloads.
 * kmalloc43_type_define() copies name and desc into kmalloc43's own storage, so they may be freed
 * or unloaded with the client at any time after it returns.
 *
 * Ownership.  owner is the module the type belongs to (KMALLOC43_TYPE sets THIS_MODULE; NULL means
 * built-in code, which never unloads).  If the owner unloads with the type still defined (a bug of
 * the owner), kmalloc43 acts when the module goes (MODULE_STATE_GOING, after its exit function):
 *  - a type without live allocations is undefined, and the omission logged with pr_err;
 *  - a type with live allocations is *orphaned*: pr_err names the module, the type, its live
 *    allocations and bytes; the struct's address no longer identifies it (a call with the old
 *    address is -EINVAL, so a new module at that address cannot reach it); it stays in debugfs
 *    "types" as "<name>(orphan)" with its live bytes, its allocations stay charged to it, and its
 *    name stays reserved for its owner's next load.  When a module of the same name defines a
 *    type of that name again (a reload), the definition *adopts* the orphan: same statistics and
 *    live allocations, now reached through the new struct, so a holder of the old allocations can
 *    free them with it.  Nothing else can free an orphan's allocations: if no reload adopts it,
 *    they are kept (never freed under a holder's feet) and reported again when kmalloc43 unloads,
 *    their pages lost.  Another module defining the same name gets -EEXIST.
 */
struct kmalloc43_type {
	const char *name;	/* short name, shown in debugfs (also limits/<name>) */
	const char *desc;	/* one-line description */
	size_t limit;		/* bytes; 0 = no limit */
	struct module *owner;	/* THIS_MODULE: read by kmalloc43_type_define() */
	u32 handle;		/* filled by kmalloc43_type_define(); opaque */
};

#define KMALLOC43_TYPE(var, shortname, description, limit_bytes)			\
	struct kmalloc43_type var = { .name = (shortname), .desc = (description),	\
				      .limit = (limit_bytes), .owner = THIS_MODULE }

/* 0, or -EINVAL (bad name), -EEXIST (name taken: by a defined type, by this struct, or by an orphan
 * of another module), -ENOSPC (type table full), -ENOMEM. May sleep. */
int kmalloc43_type_define(struct kmalloc43_type *type);
/* 0, or -EBUSY (live allocations: nothing changes), -ENOENT (not defined). May sleep. */
int kmalloc43_type_undefine(struct kmalloc43_type *type);

/*
 * NULL on failure (bad flags, size 0, too large, limit with NOWAIT, no memory with NOWAIT).
 *
 * Alignment.  Requests up to 8 KiB come from size classes chosen at load
 * (module parameter classes=pow2|fine):
 *   pow2  the paper's power-of-two buckets 16, 32, ..., 8192: every piece is
 *         naturally aligned to its size (a 100-byte request gets a 128-byte,
 *         128-byte-aligned piece);
 *   fine  at most 8 classes per doubling (16, 32, 48, ..., 128, 144, 160, ...):
 *         every piece is at least 16-byte aligned, and aligned to the largest
 *         power of two dividing its class size (a 192-byte class is 64-byte
 *         aligned, 1536 is 512-byte aligned, 4096 and 8192 are page-aligned).
 * In both modes: at least 16 bytes, and a request whose size is a multiple
 * of a power of two A <= PAGE_SIZE gets a piece aligned to A (so an array of
 * a type aligned to A, whose size is a multiple of A, is always aligned).
 * Larger requests are whole pages, page-aligned.
 */
void *kmalloc43_malloc(size_t size, struct kmalloc43_type *type, unsigned int flags);
/* 0, or -EINVAL (foreign/interior/misaligned pointer, double free, wrong type: reported with
 * pr_err, counted, and nothing is freed or corrupted). A wrong type is caught exactly, in O(1),
 * with DIAGNOSTIC on or off: every piece and page run belongs to one type, named in its page
 * record; neither type's statistics change. free(NULL) is a no-op returning 0. */
int kmalloc43_free(void *addr, struct kmalloc43_type *type);
/* realloc(NULL, n) = malloc; on failure returns NULL and addr stays valid. */
void *kmalloc43_realloc(void *addr, size_t size, struct kmalloc43_type *type, unsigned int flags);
/* Bytes usable at addr (class size or whole pages); 0 for a pointer not allocated here. */
size_t kmalloc43_usable_size(const void *addr);

/*
 * A type's statistics (the row of debugfs kmalloc43/types), exact when read: memuse and
 * high_memuse count the bytes set aside (the size class or whole pages), not the bytes asked for.
 */
struct kmalloc43_type_stats {
	u64 inuse;		/* live allocations */
	u64 requests;		/* successful allocations ever */
	u64 memuse;		/* bytes in use */
	u64 high_memuse;	/* high water of memuse */
	u64 limit;		/* bytes; 0 = no limit */
	u64 limblocks;		/* allocations refused or delayed at the limit */
};

/*
 * Fills *out: 0, or -EINVAL (out NULL), -ENOENT (type not defined), -ENODEV, -EBUSY.  Any
 * context.  Exact whenever it answers: it sums every CPU's counters under every CPU's slot lock.
 * A caller that may sleep (task context, preemptible, outside rcu_read_lock()) always gets an
 * answer: it waits for the slot locks' slow mode (at most an RCU grace period) and for the
 * locks.  Any other caller (softirq, hardirq, preemption or interrupts off, a spinlock held, or
 * any caller on a kernel without CONFIG_PREEMPT_COUNT) never waits, since a holder may be the
 * code it interrupted and a grace period cannot end under it: it returns -EBUSY, with *out
 * untouched, if the slot locks were in fast mode (no other CPU was taking them; the call then
 * kicks a work item that enters slow mode and keeps it for about a second, so that a retry a
 * moment later answers) or if a lock was held at that moment.  Retry later, or read from a
 * context that may sleep.
 */
int kmalloc43_type_stats(struct kmalloc43_type *type, struct kmalloc43_type_stats *out);

/*
 * Whole-module page totals, the numbers of debugfs kmalloc43/totals, for benchmarks and
 * monitors that compare kmalloc43's footprint with other allocators' (tools/kmtrace replay).
 * Pages are PAGE_SIZE. pages_held = pages_taken - pages_given is everything the module holds
 * from the page allocator: data_pages (bucket clusters and large runs, the memory malloc
 * manages), the page map (bookkeeping_pages), the DIAGNOSTIC table (diag_pages), vmem boundary
 * tags and hashes (tag_pages), and pages imported into the arenas but not handed out yet.
 */
struct kmalloc43_totals {
	u64 pages_taken;	/* from the page allocator since load */
	u64 pages_given;	/* back to it */
	u64 pages_held;		/* pages_taken - pages_given */
	u64 data_pages;		/* malloc's bucket clusters and large runs */
	u64 bookkeeping_pages;	/* malloc's page map (per-page usage records) */
	u64 diag_pages;		/* malloc's DIAGNOSTIC side table */
	u64 tag_pages;		/* vmem boundary tags and hash tables of the module's arenas, chunk registry */
	u64 arena_bytes;	/* bytes in the page arena's spans */
	u64 errors;		/* calls rejected with an error */
	u32 chunk_order;	/* log2 of the pages of one import chunk */
	u32 reserved;		/* 0 */
	u64 shrinker_counts;	/* the shrinker's count_objects calls */
	u64 shrinker_scans;	/* its scan_objects calls */
	u64 shrinker_pages_freed; /* pages its scans gave back to the page allocator */
};

/* Fills *out: 0, or -EINVAL (out NULL), -ENODEV (module not initialised). Any context (takes
 * the heap lock briefly, like kmalloc43_free()). */
int kmalloc43_totals(struct kmalloc43_totals *out);

/*
 * One timed aging pass of the module's heap, now (Documentation/magazines.rst, "Timed aging"):
 * what its periodic work (debugfs kmalloc43/aging_interval) does every interval, for a caller
 * that measures an idle heap's footprint (tools/kmtrace replay) or wants its memory back at
 * once. Each CPU's magazines that served nothing since the last pass and what the depots'
 * working sets no longer need go back to the buckets; the clusters that stayed parked for the
 * whole period since the last pass go back to kmem, and free chunks to the page allocator.
 * An idle heap needs about three passes for all of it.
 */
struct kmalloc43_aged {
	u64 rounds;	/* objects given back from magazines and depots */
	u64 clusters;	/* bucket clusters given back to kmem */
	u64 pages;	/* pages given back to the page allocator */
};

/* Runs the pass and fills *out (may be NULL): 0, or -ENODEV (module not initialised).
 * Process context only: it may sleep (it takes each CPU's slot in turn). */
int kmalloc43_age(struct kmalloc43_aged *out);

/* ---- vmem arenas ------------------------------------------------------------------------- */

struct kmalloc43_vmem;	/* opaque */

/* vmem flags (policy + sleep). Default policy: instant-fit. */
#define KM43_VM_SLEEP		0x0001u
#define KM43_VM_NOSLEEP		0x0002u
#define KM43_VM_INSTANTFIT	0x0000u
#define KM43_VM_BESTFIT		0x0010u
#define KM43_VM_NEXTFIT		0x0020u

/* walk/size type masks */
#define KM43_VMEM_ALLOC		0x1u
#define KM43_VMEM_FREE		0x2u

/* Import from a source: return 0 and *base, or a -errno. Called without the arena lock held
 * (may sleep if flags has KM43_VM_SLEEP). */
typedef int (*kmalloc43_vmem_import_t)(void *source, size_t size, unsigned int flags,
				       unsigned long *base);
typedef void (*kmalloc43_vmem_release_t)(void *source, unsigned long base, size_t size);

/* Import/release functions for an arena whose source is another kmalloc43 arena. */
int kmalloc43_vmem_import_from_arena(void *source, size_t size, unsigned int flags,
				     unsigned long *base);
void kmalloc43_vmem_release_to_arena(void *source, unsigned long base, size_t size);

/*
 * ERR_PTR(-EINVAL) on a bad configuration, ERR_PTR(-ENOMEM). size 0 = no initial span.
 *
 * Ownership.  owner is the module the arena belongs to (the kmalloc43_vmem_create() macro passes
 * THIS_MODULE; NULL means built-in code).  import and release must be the owner's functions (or
 * kmalloc43_vmem_import_from_arena/_release_to_arena); kmalloc43 counts its calls of them, and
 * when their module goes it waits for the calls in flight (the module's memory is still there
 * then) and never calls them again.  If the owner unloads without destroying the arena (its
 * bug), kmalloc43 acts when it goes (MODULE_STATE_GOING): pr_err names the module, the arena and
 * its live segments; the arena is *orphaned*, shown in debugfs "arenas" as "<name>(orphan)" (as
 * an orphaned type), and *disowned*: its import and release functions are never called again
 * (an arena whose import or release lies in any module that goes is disowned too).  Unlike a
 * type it is never adopted: a reload creating an arena of the same name gets a new one (arena
 * names need not be unique), since the old one's spans belong to the gone module's source.  The
 * arena itself stays valid for whoever holds its handle (a child arena, a module the segments
 * were handed to): alloc, free, add, walk and destroy still work, allocations needing an import
 * fail (-ENOMEM) or sleep.  Its
 * imported spans are kept, never given to the dead release: they are the dead module's
 * resources; pr_err and the debugfs "totals" row disowned_spans count them.  An arena left at
 * kmalloc43's own unload is destroyed without calling any client function.
 */
struct kmalloc43_vmem *kmalloc43_vmem_create_owned(struct module *owner, const char *name,
						   unsigned long base, size_t size, size_t quantum,
						   kmalloc43_vmem_import_t import,
						   kmalloc43_vmem_release_t release, void *source,
						   size_t qcache_max, unsigned int flags);
#define kmalloc43_vmem_create(name, base, size, quantum, import, release, source, qcache_max,	\
			      flags)								\
	kmalloc43_vmem_create_owned(THIS_MODULE, name, base, size, quantum, import, release,	\
				    source, qcache_max, flags)
/* 0, or -EBUSY with the arena untouched when segments are still allocated (pr_err says how many). */
int kmalloc43_vmem_destroy(struct kmalloc43_vmem *vm);
int kmalloc43_vmem_add(struct kmalloc43_vmem *vm, unsigned long base, size_t size, unsigned int flags);
/* 0 and *addr, or -ENOMEM (no space, NOSLEEP), -EINVAL (bad size/constraints). */
int kmalloc43_vmem_alloc(struct kmalloc43_vmem *vm, size_t size, unsigned int flags,
			 unsigned long *addr);
int kmalloc43_vmem_free(struct kmalloc43_vmem *vm, unsigned long addr, size_t size);
/* maxaddr 0 = no upper bound (exclusive bound otherwise), like illumos' NULL. */
int kmalloc43_vmem_xalloc(struct kmalloc43_vmem *vm, size_t size, size_t align, size_t phase,
			  size_t nocross, unsigned long minaddr, unsigned long maxaddr,
			  unsigned int flags, unsigned long *addr);
int kmalloc43_vmem_xfree(struct kmalloc43_vmem *vm, unsigned long addr, size_t size);
/* fn is called under the arena lock: it must not sleep or call into this arena. */
int kmalloc43_vmem_walk(struct kmalloc43_vmem *vm, unsigned int typemask,
			void (*fn)(void *arg, unsigned long base, size_t size), void *arg);
size_t kmalloc43_vmem_size(struct kmalloc43_vmem *vm, unsigned int typemask);

#endif /* _KMALLOC43_H */
