// SPDX-License-Identifier: GPL-2.0
/*
 * Sample C client of kmalloc43: the C ABI of rust/include/kmalloc43.h.
 *
 * Defines a malloc type with a limit, allocates, reallocates and frees from
 * it, shows NOWAIT failing at the limit and an undefine refused while memory
 * is live, and uses a vmem arena of IDs with a constrained allocation and a
 * walk.  Everything is released before init returns except one buffer, kept
 * until unload so that the type shows up in /sys/kernel/debug/kmalloc43/types.
 *
 * It imports kmalloc43's symbols, so it loads only after kmalloc43.
 */

#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/err.h>
#include <linux/module.h>
#include <linux/printk.h>
#include <linux/string.h>

#include "../rust/include/kmalloc43.h"

static KMALLOC43_TYPE(m_cdemo, "cdemo", "C sample client buffers", 4096);

/* Kept until unload. */
static char *kept;

static void count_segment(void *arg, unsigned long base, size_t size)
{
	*(size_t *)arg += size;
}

static int arena_demo(void)
{
	struct kmalloc43_vmem *ids;
	unsigned long a, b;
	size_t allocated = 0;
	int ret;

	ids = kmalloc43_vmem_create("cdemo-ids", 1, 4096, 1, NULL, NULL, NULL, 0, KM43_VM_SLEEP);
	if (IS_ERR(ids))
		return PTR_ERR(ids);
	ret = kmalloc43_vmem_alloc(ids, 10, KM43_VM_NOSLEEP | KM43_VM_BESTFIT, &a);
	if (ret)
		goto out;
	/* 16 IDs, 16-aligned, not crossing a multiple of 256, at or above 1000. */
	ret = kmalloc43_vmem_xalloc(ids, 16, 16, 0, 256, 1000, 0, KM43_VM_NOSLEEP, &b);
	if (ret)
		goto out_a;
	ret = kmalloc43_vmem_walk(ids, KM43_VMEM_ALLOC, count_segment, &allocated);
	pr_info("arena cdemo-ids: alloc 10 -> %lu, xalloc 16 align 16 nocross 256 min 1000 -> %lu; walk: %zu allocated, size(ALLOC) %zu\n",
		a, b, allocated, kmalloc43_vmem_size(ids, KM43_VMEM_ALLOC));
	if (!ret && (b % 16 || b < 1000 || b / 256 != (b + 15) / 256))
		ret = -EIO;
	kmalloc43_vmem_xfree(ids, b, 16);
out_a:
	kmalloc43_vmem_free(ids, a, 10);
out:
	if (kmalloc43_vmem_destroy(ids))
		pr_err("arena cdemo-ids: destroy refused\n");
	return ret;
}

/* kmalloc43_totals(): consistent counters while this module holds data; NULL is refused. */
static int totals_demo(void)
{
	struct kmalloc43_totals t = {};
	int r = kmalloc43_totals(&t), bad;

	bad = r || t.pages_held != t.pages_taken - t.pages_given || !t.data_pages ||
	      t.data_pages > t.pages_held || t.reserved || kmalloc43_totals(NULL) != -EINVAL ||
	      (t.shrinker_pages_freed && !t.shrinker_scans) ||
	      t.shrinker_pages_freed > t.pages_given;
	pr_info("totals: %d; pages held %llu (taken %llu, given %llu), data %llu, page map %llu, tags %llu, shrinker %llu counts %llu scans %llu pages freed%s\n",
		r, t.pages_held, t.pages_taken, t.pages_given, t.data_pages, t.bookkeeping_pages,
		t.tag_pages, t.shrinker_counts, t.shrinker_scans, t.shrinker_pages_freed,
		bad ? ": INCONSISTENT" : "");
	return bad ? -EIO : 0;
}

/* The C example of README.md and Documentation/api.rst (tools/tests/doc-examples.sh). */
/* doc:c-types-begin */
static KMALLOC43_TYPE(m_path, "path", "pathname buffers", 256 * 1024);
/* doc:c-types-end */

static int doc_example(void)
{
	/* doc:c-begin */
	char *path;
	int ret = kmalloc43_type_define(&m_path);

	if (ret)
		return ret;
	path = kmalloc43_malloc(1024, &m_path, KM43_WAITOK | KM43_ZERO);
	if (!path) {
		kmalloc43_type_undefine(&m_path);
		return -ENOMEM;
	}
	strscpy(path, "/etc/passwd", 1024);
	kmalloc43_free(path, &m_path);
	return kmalloc43_type_undefine(&m_path); /* -EBUSY while allocations live */
	/* doc:c-end */
}

static int __init kmalloc43_c_client_init(void)
{
	char *p[4], *q;
	int i, n, ret;

	ret = doc_example();
	if (ret) {
		pr_err("the documentation's example failed: %d\n", ret);
		return ret;
	}

	ret = kmalloc43_type_define(&m_cdemo);
	if (ret) {
		pr_err("kmalloc43_type_define(cdemo): %d\n", ret);
		return ret;
	}

	/* 1 KiB pieces up to the 4 KiB limit; the fifth NOWAIT fails. */
	for (n = 0; n < 4; n++) {
		p[n] = kmalloc43_malloc(1024, &m_cdemo, KM43_NOWAIT | KM43_ZERO);
		if (!p[n])
			break;
	}
	q = kmalloc43_malloc(1024, &m_cdemo, KM43_NOWAIT);
	pr_info("type cdemo (limit 4096): %d x 1 KiB allocated, usable %zu each; the next NOWAIT %s\n",
		n, n ? kmalloc43_usable_size(p[0]) : 0, q ? "SUCCEEDED (limit not enforced)" : "failed");
	ret = (n == 4 && !q) ? 0 : -EIO;
	kmalloc43_free(q, &m_cdemo);

	/* The module's totals see the 4 KiB just allocated (a bucket cluster is data). */
	if (totals_demo())
		ret = -EIO;

	i = kmalloc43_type_undefine(&m_cdemo);
	pr_info("undefine with live allocations: %d (expected %d)\n", i, -EBUSY);
	if (i != -EBUSY)
		ret = -EIO;

	for (i = 1; i < n; i++)
		kmalloc43_free(p[i], &m_cdemo);

	/* realloc keeps the contents. */
	if (n) {
		strscpy(p[0], "/var/log/messages", 1024);
		kept = kmalloc43_realloc(p[0], 2048, &m_cdemo, KM43_WAITOK);
		if (!kept) {
			kept = p[0];
			ret = -EIO;
		} else if (strcmp(kept, "/var/log/messages")) {
			ret = -EIO;
		}
		pr_info("realloc 1024 -> 2048: usable %zu, contents %s\n",
			kmalloc43_usable_size(kept), ret ? "LOST" : "kept");
	}

	if (!ret)
		ret = arena_demo();
	if (ret) {
		kmalloc43_free(kept, &m_cdemo);
		kmalloc43_type_undefine(&m_cdemo);
		pr_err("failed: %d\n", ret);
	}
	return ret;
}

static void __exit kmalloc43_c_client_exit(void)
{
	kmalloc43_free(kept, &m_cdemo);
	if (kmalloc43_type_undefine(&m_cdemo))
		pr_err("undefine of cdemo refused at unload\n");
}

module_init(kmalloc43_c_client_init);
module_exit(kmalloc43_c_client_exit);
MODULE_DESCRIPTION("Sample C client of kmalloc43");
MODULE_LICENSE("GPL");
