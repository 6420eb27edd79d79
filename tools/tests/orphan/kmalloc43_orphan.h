/* SPDX-License-Identifier: GPL-2.0 */
/*
 * What kmalloc43_orphan_client hands to kmalloc43_orphan_keeper when it unloads without cleaning
 * up (leave=1), and takes back at its next load.
 */
#ifndef _KMALLOC43_ORPHAN_H
#define _KMALLOC43_ORPHAN_H

#include <linux/types.h>

struct kmalloc43_vmem;

#define KMALLOC43_ORPHAN_PIECES		3
#define KMALLOC43_ORPHAN_SEGMENTS	2

struct kmalloc43_orphan_leftovers {
	void *piece[KMALLOC43_ORPHAN_PIECES];		/* of the client's type "orphtest" */
	size_t piece_size[KMALLOC43_ORPHAN_PIECES];
	struct kmalloc43_vmem *arena;			/* "orphtest-ids", its own source */
	unsigned long segment[KMALLOC43_ORPHAN_SEGMENTS];
	size_t segment_size;
};

/* Keeps *l (copied); -EBUSY if something is kept already. */
int kmalloc43_orphan_keep(const struct kmalloc43_orphan_leftovers *l);
/* Moves what is kept into *l: true, or false if nothing is kept. */
bool kmalloc43_orphan_take(struct kmalloc43_orphan_leftovers *l);

#endif /* _KMALLOC43_ORPHAN_H */
