/* SPDX-License-Identifier: GPL-2.0 */
/*
 * kmtrace_replay.ko: replays a kmalloc trace (the binary form of kmtrace_format.h) through
 * kmalloc43 and through SLUB, in one boot, and reports pages held, utilization and time per
 * operation side by side.  Files: kmtrace_trace.c receives and validates the trace,
 * kmtrace_backends.c holds the three allocators, kmtrace_run.c replays, kmtrace_main.c is the
 * debugfs interface.
 */
#ifndef _KMTRACE_REPLAY_H
#define _KMTRACE_REPLAY_H

#include <linux/types.h>

#include "kmtrace_format.h"

/* A received trace; the views are set once kmtrace_validate() succeeded. */
struct kmtrace {
	u8 head[sizeof(struct kmtrace_header)];	/* the header, until its size is known */
	u8 *buf;				/* vmalloc: the whole trace */
	size_t size;				/* total bytes the header announced */
	size_t received;
	bool valid;
	const struct kmtrace_cache *caches;
	const struct kmtrace_record *recs;
	u32 ncaches, nslots;
	u64 nrecords, peak_record, peak_live_bytes;
};

void kmtrace_reset(struct kmtrace *t);
ssize_t kmtrace_receive(struct kmtrace *t, const char __user *ubuf, size_t len, loff_t pos);
int kmtrace_validate(struct kmtrace *t);

/* One allocator under test. */
struct kmtrace_backend {
	const char *name;
	/* Prepare for the trace (caches, types); 0 or -errno. */
	int (*setup)(void *priv, const struct kmtrace *t);
	void *(*alloc)(void *priv, u16 cache, u32 bytes);
	void (*free)(void *priv, u16 cache, void *p);
	/* Pages the allocator holds now (a global counter: subtract a baseline). */
	long (*pages)(void *priv);
	/*
	 * Optional: let the allocator do what it does when idle, after the trace's last free
	 * (kmalloc43: its timed aging passes, kmalloc43_age()); the passes that gave something back.
	 */
	u32 (*idle)(void *priv);
	/* Undo setup(); every object has been freed. */
	void (*teardown)(void *priv);
	size_t priv_size;
};

extern const struct kmtrace_backend kmtrace_kmalloc43, kmtrace_slub_caches, kmtrace_slub_kmalloc,
	kmtrace_slub_merged;

/*
 * kmalloc43's own breakdown, recorded at the peak: pages from kmalloc43_totals(), and the bytes
 * the live objects take of the data pages (the types' memuse, summed).
 */
struct kmtrace_k43_pages {
	long data, map, diag, tags;
	u64 inuse_bytes;
};
void kmtrace_k43_breakdown(void *priv, struct kmtrace_k43_pages *out);

#define KMTRACE_SAMPLES		1000
#define KMTRACE_TIMED_RUNS	5
#define KMTRACE_LABEL_LEN	32

/* What one replay measured. */
struct kmtrace_result {
	char label[KMTRACE_LABEL_LEN];
	bool is_k43;
	long base_pages;		/* before the first record */
	long peak_pages;		/* max over every record, minus base */
	u64 peak_pages_record;
	long pages_at_peak;		/* after the trace's peak record, minus base */
	struct kmtrace_k43_pages k43_at_peak;
	long pages_left;		/* after freeing what the trace left live, minus base */
	bool idled;			/* the backend has idle(): pages_idle and idle_passes */
	long pages_idle;		/* then after the backend's idle(), minus base (may be < 0) */
	u32 idle_passes;		/* idle()'s passes that gave something back */
	u64 ns[KMTRACE_TIMED_RUNS];	/* whole trace, no sampling */
	u64 best_ns;
	/* slub-caches timed in turn with this allocator, pass for pass: the ratio's reference */
	u64 ref_ns[KMTRACE_TIMED_RUNS];
	u64 ref_best_ns;
	u32 stride, nsamples;
	s32 samples[KMTRACE_SAMPLES + 1];	/* pages held after every stride-th record */
};

int kmtrace_replay(const struct kmtrace *t, const struct kmtrace_backend *b,
		   struct kmtrace_result *res);

#endif /* _KMTRACE_REPLAY_H */
