// SPDX-License-Identifier: GPL-2.0
/*
 * A minimal client of kmalloc43.ko: it calls an exported kmalloc43 function
 * at load time, so it can only be loaded after kmalloc43 (modprobe knows this
 * from the symbol dependency; insmod fails with "Unknown symbol" otherwise).
 */

#include <linux/module.h>
#include <linux/printk.h>

#include "../rust/include/kmalloc43.h"

static int __init kmalloc43_client_init(void)
{
	int ret = kmalloc43_page_cycle();

	if (ret) {
		pr_err("kmalloc43_client: kmalloc43_page_cycle() failed: %d\n", ret);
		return ret;
	}
	pr_info("kmalloc43_client: kmalloc43_page_cycle() ok\n");
	return 0;
}

static void __exit kmalloc43_client_exit(void)
{
	pr_info("kmalloc43_client: unloaded\n");
}

module_init(kmalloc43_client_init);
module_exit(kmalloc43_client_exit);
MODULE_DESCRIPTION("Sample client of kmalloc43");
MODULE_LICENSE("GPL");
