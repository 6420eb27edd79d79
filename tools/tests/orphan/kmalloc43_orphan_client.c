// SPDX-License-Identifier: GPL-2.0
/*
 * The client in the client-ownership scenario (tools/guest/steps.d/30-orphan.sh).
 *
 * Every load defines the type "orphtest" and uses it and an arena "orphtest-ids" whose source is
 * this module's own import/release functions (integer ranges).
 *
 * leave=1: init also allocates three pieces of "orphtest" and two segments of the arena, hands
 * them to kmalloc43_orphan_keeper, and exit then does no cleanup at all: the type stays defined
 * with live allocations, the arena stays with live segments and imported spans.  kmalloc43's
 * module notifier must orphan the type and disown the arena (its import/release, in this
 * module's freed text, must never be called again).
 *
 * A load that finds leftovers at the keeper (the reload after leave=1) checks that its define
 * adopted the orphan (the old allocations are charged to it), frees them with its own type,
 * frees the old arena's segments and destroys it (its release function is gone: its spans are
 * kept and counted), then works as usual.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/atomic.h>
#include <linux/err.h>
#include <linux/module.h>
#include <linux/printk.h>

#include "../../../rust/include/kmalloc43.h"
#include "kmalloc43_orphan.h"

static bool leave;
module_param(leave, bool, 0444);
MODULE_PARM_DESC(leave, "Unload without cleaning up (leave a type with live allocations and an arena with live segments)");

static KMALLOC43_TYPE(m_orphtest, "orphtest", "kmalloc43 client-ownership scenario", 0);

static atomic_long_t next_id = ATOMIC_LONG_INIT(1 << 20);
static atomic_t imports, releases;

static int ids_import(void *source, size_t size, unsigned int flags, unsigned long *base)
{
	*base = atomic_long_fetch_add(size, &next_id);
	atomic_inc(&imports);
	return 0;
}

static void ids_release(void *source, unsigned long base, size_t size)
{
	atomic_inc(&releases);
}

/* The reload: takes back what the previous load left, through the adopted type. */
static int take_back(void)
{
	struct kmalloc43_orphan_leftovers l;
	struct kmalloc43_type_stats st;
	int i, ret;

	if (!kmalloc43_orphan_take(&l))
		return 0;
	ret = kmalloc43_type_stats(&m_orphtest, &st);
	pr_info("reloaded: type orphtest has %llu live allocations (%llu bytes) of the previous load\n",
		ret ? 0 : st.inuse, ret ? 0 : st.memuse);
	if (ret || st.inuse != KMALLOC43_ORPHAN_PIECES) {
		pr_err("the previous load's allocations were not adopted (%d)\n", ret);
		return -EIO;
	}
	for (i = 0; i < KMALLOC43_ORPHAN_PIECES; i++) {
		if (kmalloc43_usable_size(l.piece[i]) < l.piece_size[i])
			ret = -EIO;
		if (kmalloc43_free(l.piece[i], &m_orphtest))
			ret = -EIO;
	}
	for (i = 0; i < KMALLOC43_ORPHAN_SEGMENTS; i++)
		if (kmalloc43_vmem_free(l.arena, l.segment[i], l.segment_size))
			ret = -EIO;
	if (kmalloc43_vmem_destroy(l.arena))
		ret = -EIO;
	if (kmalloc43_type_stats(&m_orphtest, &st) || st.inuse || st.memuse)
		ret = -EIO;
	pr_info("freed the previous load's %d allocations and %d segments, destroyed its arena: %s\n",
		KMALLOC43_ORPHAN_PIECES, KMALLOC43_ORPHAN_SEGMENTS, ret ? "FAILED" : "ok");
	return ret;
}

/* What every load does: the type and an arena with this module's own source. */
static int work(void)
{
	struct kmalloc43_orphan_leftovers l = { .segment_size = 16 };
	static const size_t sizes[KMALLOC43_ORPHAN_PIECES] = { 100, 2000, 20000 };
	struct kmalloc43_vmem *ids;
	void *p;
	int i, ret = 0;

	p = kmalloc43_malloc(64, &m_orphtest, KM43_WAITOK | KM43_ZERO);
	if (!p || kmalloc43_free(p, &m_orphtest))
		return -ENOMEM;

	ids = kmalloc43_vmem_create("orphtest-ids", 0, 0, 1, ids_import, ids_release, NULL, 0,
				    KM43_VM_SLEEP);
	if (IS_ERR(ids))
		return PTR_ERR(ids);
	for (i = 0; i < KMALLOC43_ORPHAN_SEGMENTS && !ret; i++)
		ret = kmalloc43_vmem_alloc(ids, l.segment_size, KM43_VM_NOSLEEP, &l.segment[i]);
	if (!ret && atomic_read(&imports) < 1)
		ret = -EIO;	/* the arena had no span: the segments must have been imported */
	if (ret)
		goto out;

	if (leave) {
		for (i = 0; i < KMALLOC43_ORPHAN_PIECES; i++) {
			l.piece_size[i] = sizes[i];
			l.piece[i] = kmalloc43_malloc(sizes[i], &m_orphtest, KM43_WAITOK);
			if (!l.piece[i])
				ret = -ENOMEM;
		}
		l.arena = ids;
		if (!ret)
			ret = kmalloc43_orphan_keep(&l);
		if (!ret) {
			pr_info("leaving %d allocations of orphtest and %d segments of orphtest-ids (%d imported spans) behind\n",
				KMALLOC43_ORPHAN_PIECES, KMALLOC43_ORPHAN_SEGMENTS,
				atomic_read(&imports));
			return 0;
		}
		for (i = 0; i < KMALLOC43_ORPHAN_PIECES; i++)
			kmalloc43_free(l.piece[i], &m_orphtest);
		i = KMALLOC43_ORPHAN_SEGMENTS;
	}
out:
	while (i-- > 0)
		kmalloc43_vmem_free(ids, l.segment[i], l.segment_size);
	if (kmalloc43_vmem_destroy(ids))
		ret = -EIO;
	/* Destroying an owned arena gives every imported span back to this module. */
	if (!ret && atomic_read(&releases) != atomic_read(&imports))
		ret = -EIO;
	return ret;
}

static int __init kmalloc43_orphan_client_init(void)
{
	int ret = kmalloc43_type_define(&m_orphtest);

	if (ret) {
		pr_err("kmalloc43_type_define(orphtest): %d\n", ret);
		return ret;
	}
	ret = take_back();
	if (!ret)
		ret = work();
	if (ret) {
		pr_err("failed: %d\n", ret);
		kmalloc43_type_undefine(&m_orphtest);
	}
	return ret;
}

static void __exit kmalloc43_orphan_client_exit(void)
{
	if (leave)
		return;	/* the bug under test: no cleanup at all */
	if (kmalloc43_type_undefine(&m_orphtest))
		pr_err("undefine of orphtest refused at unload\n");
}

module_init(kmalloc43_orphan_client_init);
module_exit(kmalloc43_orphan_client_exit);
MODULE_DESCRIPTION("kmalloc43 test: a client that unloads without cleaning up, and reloads");
MODULE_LICENSE("GPL");
