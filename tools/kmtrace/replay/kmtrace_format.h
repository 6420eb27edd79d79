/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The compact binary trace that tools/kmtrace/kmtrace.py pack makes on the host from a trace
 * CSV and that kmtrace_replay.ko replays (Documentation/kmtrace.rst). Little-endian, packed.
 *
 *   struct kmtrace_header                     64 bytes
 *   struct kmtrace_cache[ncaches]             48 bytes each; cache 0 is "kmalloc"
 *   struct kmtrace_record[nrecords]           12 bytes each
 *
 * The host turns addresses into slots (0..nslots-1): an alloc fills an empty slot, a free
 * empties a full one, so the replay needs no address lookup. free_unknown rows are left out.
 * kmem_cache allocs carry their cache's object size. checksum is FNV-1a (32 bit) of every byte
 * after the header.
 */
#ifndef _KMTRACE_FORMAT_H
#define _KMTRACE_FORMAT_H

#include <linux/build_bug.h>
#include <linux/types.h>

#define KMTRACE_MAGIC		"KM43TRC1"
#define KMTRACE_VERSION		1
#define KMTRACE_NAME_LEN	40
#define KMTRACE_OP_ALLOC	1
#define KMTRACE_OP_FREE		2

/* Limits of what the replay accepts (a bigger trace is refused, not truncated). */
#define KMTRACE_MAX_BYTES	(512UL << 20)
#define KMTRACE_MAX_CACHES	4096
#define KMTRACE_MAX_SLOTS	(4U << 20)
#define KMTRACE_MAX_OBJECT	(4U << 20)	/* SLUB's largest kmalloc (order-10 pages) */

struct kmtrace_header {
	char magic[8];
	__le32 version;
	__le32 header_bytes;
	__le32 ncaches;
	__le32 nslots;
	__le64 nrecords;
	__le64 total_bytes;
	__le64 peak_record;		/* record after which live requested bytes peak */
	__le64 peak_live_bytes;		/* their value */
	__le32 checksum;
	__le32 reserved;
} __packed;

struct kmtrace_cache {
	char name[KMTRACE_NAME_LEN];	/* NUL-terminated, NUL-padded */
	__le32 object_size;		/* 0 for cache 0 ("kmalloc") */
	__le32 reserved;
} __packed;

struct kmtrace_record {
	__le32 slot;
	__le32 bytes;			/* alloc: bytes requested; free: 0 */
	__le16 cache;
	u8 op;				/* KMTRACE_OP_* */
	u8 reserved;
} __packed;

static_assert(sizeof(struct kmtrace_header) == 64);
static_assert(sizeof(struct kmtrace_cache) == 48);
static_assert(sizeof(struct kmtrace_record) == 12);

#endif /* _KMTRACE_FORMAT_H */
