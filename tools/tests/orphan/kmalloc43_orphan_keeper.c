// SPDX-License-Identifier: GPL-2.0
/*
 * The holder in the client-ownership scenario: a module that outlives kmalloc43_orphan_client
 * and keeps what the client handed it (pointers to kmalloc43 allocations, an arena handle,
 * segments), as a subsystem keeps objects a driver gave it.  It only stores them: freeing needs
 * the client's type, which only the client's next load can reach again (kmalloc43 adopts the
 * orphaned type then).
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/printk.h>

#include "kmalloc43_orphan.h"

static DEFINE_MUTEX(lock);
static struct kmalloc43_orphan_leftovers kept;
static bool keeping;

int kmalloc43_orphan_keep(const struct kmalloc43_orphan_leftovers *l)
{
	int ret = -EBUSY;

	mutex_lock(&lock);
	if (!keeping) {
		kept = *l;
		keeping = true;
		ret = 0;
	}
	mutex_unlock(&lock);
	return ret;
}
EXPORT_SYMBOL_GPL(kmalloc43_orphan_keep);

bool kmalloc43_orphan_take(struct kmalloc43_orphan_leftovers *l)
{
	bool ret;

	mutex_lock(&lock);
	ret = keeping;
	if (keeping) {
		*l = kept;
		keeping = false;
	}
	mutex_unlock(&lock);
	return ret;
}
EXPORT_SYMBOL_GPL(kmalloc43_orphan_take);

static int __init kmalloc43_orphan_keeper_init(void)
{
	return 0;
}

static void __exit kmalloc43_orphan_keeper_exit(void)
{
	/* The client depends on this module, so it is gone; what it left stays with kmalloc43. */
	if (keeping)
		pr_err("unloaded while keeping a client's leftovers: they can no longer be freed\n");
}

module_init(kmalloc43_orphan_keeper_init);
module_exit(kmalloc43_orphan_keeper_exit);
MODULE_DESCRIPTION("kmalloc43 test: keeps what a client handed out across its unload");
MODULE_LICENSE("GPL");
