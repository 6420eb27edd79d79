/* SPDX-License-Identifier: GPL-2.0 */
/*
 * kmalloc43: the C interface that kmalloc43.ko exports to other modules.
 */
#ifndef _KMALLOC43_H
#define _KMALLOC43_H

/**
 * kmalloc43_page_cycle() - allocate a page, write and read it back, free it
 *
 * A self-test of the module's page path, callable by client modules.
 * Context: process context; may sleep.
 * Return: 0 on success, -ENOMEM or -EIO on failure.
 */
int kmalloc43_page_cycle(void);

#endif /* _KMALLOC43_H */
