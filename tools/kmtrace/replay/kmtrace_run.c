// SPDX-License-Identifier: GPL-2.0
/*
 * Replaying a validated trace through one allocator.
 *
 * First a measured pass: after every record the allocator's page count is read (kmalloc43:
 * kmalloc43_totals(); SLUB: the slab page counters), which gives the peak over the whole
 * trace, the pages held right after the trace's own peak of live requested bytes (for the
 * utilization) and one sample every stride records for the plot.  Then KMTRACE_TIMED_RUNS
 * passes without any sampling, timed with ktime_get_ns() around the record loop, each followed
 * by a timed pass of slub-caches; the best of each is reported.  Every pass frees what the trace leaves live (untimed) and undoes its setup.
 */

#include <linux/ktime.h>
#include <linux/minmax.h>
#include <linux/sched.h>
#include <linux/slab.h>
#include <linux/vmalloc.h>

#include "kmtrace_replay.h"

struct pass {
	const struct kmtrace *t;
	const struct kmtrace_backend *b;
	void *priv;
	void **obj;		/* per slot */
	u16 *cache;		/* per slot */
};

/* Frees whatever the trace left live. */
static void free_live(struct pass *p)
{
	u32 s;

	for (s = 0; s < p->t->nslots; s++) {
		if (p->obj[s]) {
			p->b->free(p->priv, p->cache[s], p->obj[s]);
			p->obj[s] = NULL;
		}
		if (!(s & 4095))
			cond_resched();
	}
}

static void k43_minus(struct kmtrace_k43_pages *a, const struct kmtrace_k43_pages *base)
{
	a->data -= base->data;
	a->map -= base->map;
	a->diag -= base->diag;
	a->tags -= base->tags;
	a->inuse_bytes -= base->inuse_bytes;
}

/* One pass over the trace; with res, sampled (untimed); without, timed into *ns. */
static int one_pass(struct pass *p, struct kmtrace_result *res, u64 *ns)
{
	const struct kmtrace *t = p->t;
	const struct kmtrace_backend *b = p->b;
	struct kmtrace_k43_pages k43_base = {};
	long base = 0;
	u64 i, t0;
	int ret;

	ret = b->setup(p->priv, t);
	if (ret)
		return ret;
	if (res) {
		base = b->pages(p->priv);
		res->base_pages = base;
		res->stride = max_t(u64, 1, DIV_ROUND_UP(t->nrecords, KMTRACE_SAMPLES));
		res->nsamples = 0;
		res->peak_pages = 0;
		if (res->is_k43)
			kmtrace_k43_breakdown(p->priv, &k43_base);
	}
	t0 = ktime_get_ns();
	for (i = 0; i < t->nrecords; i++) {
		const struct kmtrace_record *r = &t->recs[i];
		u32 slot = le32_to_cpu(r->slot);
		u16 cache = le16_to_cpu(r->cache);

		if (r->op == KMTRACE_OP_ALLOC) {
			void *obj = b->alloc(p->priv, cache, le32_to_cpu(r->bytes));

			if (!obj) {
				pr_err("kmtrace_replay: %s: record %llu: alloc of %u bytes failed\n",
				       b->name, i, le32_to_cpu(r->bytes));
				ret = -ENOMEM;
				break;
			}
			p->obj[slot] = obj;
			p->cache[slot] = cache;
		} else {
			b->free(p->priv, cache, p->obj[slot]);
			p->obj[slot] = NULL;
		}
		if (res) {
			long now = b->pages(p->priv) - base;

			if (now > res->peak_pages) {
				res->peak_pages = now;
				res->peak_pages_record = i;
			}
			if (i == t->peak_record) {
				res->pages_at_peak = now;
				if (res->is_k43) {
					kmtrace_k43_breakdown(p->priv, &res->k43_at_peak);
					k43_minus(&res->k43_at_peak, &k43_base);
				}
			}
			if ((i + 1) % res->stride == 0 || i + 1 == t->nrecords)
				res->samples[res->nsamples++] = now;
		}
		if (!(i & 4095))
			cond_resched();
	}
	if (ns)
		*ns = ktime_get_ns() - t0;
	free_live(p);
	if (res) {
		res->pages_left = b->pages(p->priv) - base;
		res->idled = !!b->idle;
		if (b->idle) {
			res->idle_passes = b->idle(p->priv);
			res->pages_idle = b->pages(p->priv) - base;
		}
	}
	b->teardown(p->priv);
	return ret;
}

static int pass_init(struct pass *p, const struct kmtrace *t, const struct kmtrace_backend *b)
{
	*p = (struct pass){ .t = t, .b = b };
	p->priv = kzalloc(max_t(size_t, b->priv_size, 1), GFP_KERNEL);
	p->obj = vzalloc(array_size(max_t(u32, t->nslots, 1), sizeof(*p->obj)));
	p->cache = vzalloc(array_size(max_t(u32, t->nslots, 1), sizeof(*p->cache)));
	return p->priv && p->obj && p->cache ? 0 : -ENOMEM;
}

static void pass_fini(struct pass *p)
{
	vfree(p->cache);
	vfree(p->obj);
	kfree(p->priv);
}

int kmtrace_replay(const struct kmtrace *t, const struct kmtrace_backend *b,
		   struct kmtrace_result *res)
{
	struct pass p = {}, ref = {};
	int ret, i;

	ret = pass_init(&p, t, b);
	if (!ret)
		ret = pass_init(&ref, t, &kmtrace_slub_caches);
	if (!ret)
		ret = one_pass(&p, res, NULL);
	/*
	 * Timed passes alternate with passes of the reference (slub-caches), so that both see
	 * the same load of the (shared, emulated) machine; the ratio of the bests is reported.
	 */
	res->best_ns = U64_MAX;
	res->ref_best_ns = U64_MAX;
	for (i = 0; !ret && i < KMTRACE_TIMED_RUNS; i++) {
		ret = one_pass(&p, NULL, &res->ns[i]);
		if (!ret)
			ret = one_pass(&ref, NULL, &res->ref_ns[i]);
		res->best_ns = min(res->best_ns, res->ns[i]);
		res->ref_best_ns = min(res->ref_best_ns, res->ref_ns[i]);
	}
	pass_fini(&ref);
	pass_fini(&p);
	return ret;
}
