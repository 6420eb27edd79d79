// SPDX-License-Identifier: GPL-2.0
/*
 * The allocators a trace is replayed through, and how their pages are counted.
 *
 * kmalloc43: one malloc type per trace cache (folded modulo KMTRACE_K43_TYPES when there are
 *   more), kmalloc43_malloc(bytes, type, WAITOK); pages held from kmalloc43_totals()
 *   (pages_held: everything the module holds from the page allocator, data and metadata); at
 *   the trace's peak also the types' memuse (kmalloc43_type_stats()), the bytes of the data
 *   pages the live objects take.
 *
 * SLUB, dedicated caches (slub-caches): one kmem_cache_create() per trace cache with the
 *   traced object size, and kmalloc(bytes) for the trace's kmalloc rows, all into caches
 *   created empty for the replay (SLAB_NO_MERGE; a private kmem_buckets set for the kmalloc
 *   sizes), so that, like kmalloc43, SLUB starts from nothing: objects never land in free
 *   slots of slabs the running system already holds.
 *
 * SLUB, kmalloc only (slub-kmalloc): kmalloc(bytes) for every row, into a private
 *   kmem_buckets set.
 *
 * SLUB, merged (slub-merged): like slub-caches but with default flags and the system's own
 *   kmalloc caches: what a running kernel does; the replay's objects fill free slots of the
 *   system's partial slabs, which the page counter cannot tell apart (a bias in SLUB's
 *   favour, shown for comparison).
 *
 * SLUB's pages: the node counters NR_SLAB_UNRECLAIMABLE_B + NR_SLAB_RECLAIMABLE_B (kept in
 * pages; they include large kmalloc pages), read like global_node_page_state_pages() but with
 * every online CPU's pending per-CPU delta added (vm_node_stat_diff), so that the vmstat
 * threshold does not hide tens of pages.  They are global: the replay subtracts the value
 * before the first record; the idle guest's own slab traffic during a replay is noise.
 */

#include <linux/cpumask.h>
#include <linux/mm.h>
#include <linux/mmzone.h>
#include <linux/nodemask.h>
#include <linux/percpu.h>
#include <linux/slab.h>
#include <linux/vmstat.h>

#include "../../../rust/include/kmalloc43.h"
#include "kmtrace_replay.h"

/* ---- kmalloc43 ------------------------------------------------------------------------------ */

#define KMTRACE_K43_TYPES	64

struct k43_priv {
	u32 ntypes;
	struct kmalloc43_type types[KMTRACE_K43_TYPES];
	char names[KMTRACE_K43_TYPES][16];
};

static void k43_teardown(void *priv)
{
	struct k43_priv *p = priv;
	u32 i;

	for (i = 0; i < p->ntypes; i++)
		if (kmalloc43_type_undefine(&p->types[i]))
			pr_err("kmtrace_replay: kmalloc43 type %s not undefined\n", p->names[i]);
	p->ntypes = 0;
}

static int k43_setup(void *priv, const struct kmtrace *t)
{
	struct k43_priv *p = priv;
	u32 i;
	int ret;

	p->ntypes = 0;
	for (i = 0; i < min_t(u32, t->ncaches, KMTRACE_K43_TYPES); i++) {
		snprintf(p->names[i], sizeof(p->names[i]), "kmtrace%u", i);
		p->types[i] = (struct kmalloc43_type){ .name = p->names[i],
						       .desc = "kmtrace replay" };
		ret = kmalloc43_type_define(&p->types[i]);
		if (ret) {
			pr_err("kmtrace_replay: kmalloc43_type_define(%s): %d\n", p->names[i], ret);
			k43_teardown(p);
			return ret;
		}
		p->ntypes = i + 1;
	}
	return 0;
}

static void *k43_alloc(void *priv, u16 cache, u32 bytes)
{
	struct k43_priv *p = priv;

	return kmalloc43_malloc(bytes, &p->types[cache % p->ntypes], KM43_WAITOK);
}

static void k43_free(void *priv, u16 cache, void *obj)
{
	struct k43_priv *p = priv;

	if (kmalloc43_free(obj, &p->types[cache % p->ntypes]))
		pr_err("kmtrace_replay: kmalloc43_free refused an object it handed out\n");
}

static long k43_pages(void *priv)
{
	struct kmalloc43_totals tot;

	return kmalloc43_totals(&tot) ? 0 : tot.pages_held;
}

/* Timed aging passes kmalloc43_age() runs after the trace's last free, at most. */
#define K43_IDLE_PASSES	8

/*
 * The heap left idle after the trace's last free: kmalloc43's timed aging pass, as its periodic
 * work would run it with no call in between (Documentation/magazines.rst, "Timed aging"), until
 * two passes in a row give nothing back (the host model, kmreplay, stops the same way).
 */
static u32 k43_idle(void *priv)
{
	u32 i, useful = 0, quiet = 0;

	for (i = 1; i <= K43_IDLE_PASSES && quiet < 2; i++) {
		struct kmalloc43_aged a = {};

		if (kmalloc43_age(&a))
			break;
		if (a.rounds || a.clusters || a.pages) {
			useful = i;
			quiet = 0;
		} else {
			quiet++;
		}
	}
	return useful;
}

void kmtrace_k43_breakdown(void *priv, struct kmtrace_k43_pages *out)
{
	struct k43_priv *p = priv;
	struct kmalloc43_totals tot = {};
	u32 i;

	kmalloc43_totals(&tot);
	out->data = tot.data_pages;
	out->map = tot.bookkeeping_pages;
	out->diag = tot.diag_pages;
	out->tags = tot.tag_pages;
	/*
	 * The bytes set aside for the trace's live objects (each type's memuse: its objects' size
	 * classes or whole pages).  The data pages' other bytes are free: pieces on the buckets'
	 * free lists, objects resting in magazines and depots, the tails of clusters.
	 */
	out->inuse_bytes = 0;
	for (i = 0; i < p->ntypes; i++) {
		struct kmalloc43_type_stats st;

		if (!kmalloc43_type_stats(&p->types[i], &st))
			out->inuse_bytes += st.memuse;
	}
}

const struct kmtrace_backend kmtrace_kmalloc43 = {
	.name = "kmalloc43",
	.setup = k43_setup,
	.alloc = k43_alloc,
	.free = k43_free,
	.pages = k43_pages,
	.idle = k43_idle,
	.teardown = k43_teardown,
	.priv_size = sizeof(struct k43_priv),
};

/* ---- SLUB ----------------------------------------------------------------------------------- */

/* Slab pages now, with the per-CPU deltas not yet folded into the node counters. */
static long slab_pages(void *priv)
{
	static const enum node_stat_item items[] = { NR_SLAB_UNRECLAIMABLE_B,
						     NR_SLAB_RECLAIMABLE_B };
	long x = 0;
	int nid, cpu;
	size_t i;

	for_each_online_node(nid) {
		struct pglist_data *pgdat = NODE_DATA(nid);

		for (i = 0; i < ARRAY_SIZE(items); i++) {
			x += atomic_long_read(&pgdat->vm_stat[items[i]]);
			for_each_online_cpu(cpu)
				x += per_cpu_ptr(pgdat->per_cpu_nodestats, cpu)
					     ->vm_node_stat_diff[items[i]];
		}
	}
	return x;
}

struct slub_priv {
	u32 ncaches;
	struct kmem_cache **caches;	/* [0] unused: the kmalloc rows */
	kmem_buckets *kmalloc;		/* private kmalloc caches (NULL: the system's) */
};

/* A private set of kmalloc caches; kmem_buckets_create() has no destroy: this is it. */
static void buckets_destroy(kmem_buckets *b)
{
	size_t i, j;

	if (ZERO_OR_NULL_PTR(b))
		return;
	for (i = 0; i < ARRAY_SIZE(*b); i++) {
		bool alias = false;

		for (j = 0; j < i; j++)
			alias |= (*b)[j] == (*b)[i];
		if ((*b)[i] && !alias)
			kmem_cache_destroy((*b)[i]);
	}
	kfree(b);	/* kfree() takes any slab object, kmem_buckets_cache's too */
}

static void slub_teardown(void *priv)
{
	struct slub_priv *p = priv;
	u32 i;

	for (i = 1; i < p->ncaches; i++)
		kmem_cache_destroy(p->caches[i]);
	kfree(p->caches);
	p->caches = NULL;
	p->ncaches = 0;
	buckets_destroy(p->kmalloc);
	p->kmalloc = NULL;
}

/*
 * fresh: the trace's caches and kmalloc sizes get caches of their own, created empty and
 * unmerged (SLAB_NO_MERGE; kmem_buckets_create() for the kmalloc sizes), like kmalloc43's
 * fresh types; otherwise kmem_cache_create() with default flags (merged into the running
 * system's compatible caches) and the system's kmalloc caches.
 */
static int slub_setup_common(struct slub_priv *p, const struct kmtrace *t, u32 ncaches,
			     bool fresh)
{
	u32 i;

	p->ncaches = 0;
	p->kmalloc = NULL;
	p->caches = kcalloc(max_t(u32, ncaches, 1), sizeof(*p->caches), GFP_KERNEL);
	if (!p->caches)
		return -ENOMEM;
	if (fresh) {
		p->kmalloc = kmem_buckets_create("kmr_kmalloc", 0, 0, 0, NULL);
		if (ZERO_OR_NULL_PTR(p->kmalloc)) {
			pr_err("kmtrace_replay: kmem_buckets_create failed (CONFIG_SLAB_BUCKETS?)\n");
			p->kmalloc = NULL;
			slub_teardown(p);
			return -ENOMEM;
		}
	}
	p->ncaches = ncaches;
	for (i = 1; i < ncaches; i++) {
		char name[KMTRACE_NAME_LEN + 8];

		snprintf(name, sizeof(name), "kmr_%s", t->caches[i].name);
		p->caches[i] = kmem_cache_create(name, le32_to_cpu(t->caches[i].object_size),
						 0, fresh ? SLAB_NO_MERGE : 0, NULL);
		if (!p->caches[i]) {
			pr_err("kmtrace_replay: kmem_cache_create(%s) failed\n", name);
			p->ncaches = i;
			slub_teardown(p);
			return -ENOMEM;
		}
	}
	return 0;
}

static int slub_setup(void *priv, const struct kmtrace *t)
{
	return slub_setup_common(priv, t, t->ncaches, true);
}

static int slub_merged_setup(void *priv, const struct kmtrace *t)
{
	return slub_setup_common(priv, t, t->ncaches, false);
}

static int kmalloc_setup(void *priv, const struct kmtrace *t)
{
	return slub_setup_common(priv, t, 0, true);
}

static void *slub_alloc(void *priv, u16 cache, u32 bytes)
{
	struct slub_priv *p = priv;

	if (cache && cache < p->ncaches)
		return kmem_cache_alloc(p->caches[cache], GFP_KERNEL);
	return p->kmalloc ? kmem_buckets_alloc(p->kmalloc, bytes, GFP_KERNEL) :
			    kmalloc(bytes, GFP_KERNEL);
}

static void slub_free(void *priv, u16 cache, void *obj)
{
	struct slub_priv *p = priv;

	if (cache && cache < p->ncaches)
		kmem_cache_free(p->caches[cache], obj);
	else
		kfree(obj);
}

/* The three SLUB lines differ only in their setup. */
#define SLUB_BACKEND(var, label, setup_fn)			\
	const struct kmtrace_backend var = {			\
		.name = label,					\
		.setup = setup_fn,				\
		.alloc = slub_alloc,				\
		.free = slub_free,				\
		.pages = slab_pages,				\
		.teardown = slub_teardown,			\
		.priv_size = sizeof(struct slub_priv),		\
	}

SLUB_BACKEND(kmtrace_slub_caches, "slub-caches", slub_setup);
SLUB_BACKEND(kmtrace_slub_kmalloc, "slub-kmalloc", kmalloc_setup);
SLUB_BACKEND(kmtrace_slub_merged, "slub-merged", slub_merged_setup);
