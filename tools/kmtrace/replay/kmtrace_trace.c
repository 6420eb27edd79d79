// SPDX-License-Identifier: GPL-2.0
/*
 * Receiving and validating a binary trace.  Nothing is replayed until the whole trace has
 * been checked: a bad or truncated trace gets one pr_err() naming the first problem (and the
 * record) and -EINVAL, never a partial run.
 */

#include <linux/bitmap.h>
#include <linux/ctype.h>
#include <linux/overflow.h>
#include <linux/printk.h>
#include <linux/string.h>
#include <linux/uaccess.h>
#include <linux/vmalloc.h>

#include "kmtrace_replay.h"

#define bad(fmt, ...) ({ pr_err("kmtrace_replay: bad trace: " fmt "\n", ##__VA_ARGS__); -EINVAL; })

void kmtrace_reset(struct kmtrace *t)
{
	vfree(t->buf);
	memset(t, 0, sizeof(*t));
}

/* The header's own fields, checked as soon as its 64 bytes are in. */
static int check_header(const struct kmtrace_header *h, size_t *total)
{
	u64 bytes = le64_to_cpu(h->total_bytes);

	if (memcmp(h->magic, KMTRACE_MAGIC, sizeof(h->magic)))
		return bad("no %s magic (not made by kmtrace.py pack?)", KMTRACE_MAGIC);
	if (le32_to_cpu(h->version) != KMTRACE_VERSION)
		return bad("version %u, this replay reads %u", le32_to_cpu(h->version),
			   KMTRACE_VERSION);
	if (le32_to_cpu(h->header_bytes) != sizeof(*h))
		return bad("header of %u bytes, expected %zu", le32_to_cpu(h->header_bytes),
			   sizeof(*h));
	if (bytes < sizeof(*h) || bytes > KMTRACE_MAX_BYTES)
		return bad("total size %llu bytes (at most %lu)", bytes, KMTRACE_MAX_BYTES);
	*total = bytes;
	return 0;
}

/* Appends a chunk written at pos; writes must be sequential from 0 (pos 0 starts over). */
ssize_t kmtrace_receive(struct kmtrace *t, const char __user *ubuf, size_t len, loff_t pos)
{
	size_t done = 0;

	if (pos == 0)
		kmtrace_reset(t);
	if (pos != t->received) {
		pr_err("kmtrace_replay: write at offset %lld, expected %zu (write the trace in order)\n",
		       pos, t->received);
		return -EINVAL;
	}
	while (done < len) {
		size_t n;

		if (!t->buf) {
			size_t total;
			int ret;

			n = min(len - done, sizeof(t->head) - t->received);
			if (copy_from_user(t->head + t->received, ubuf + done, n))
				return -EFAULT;
			t->received += n;
			done += n;
			if (t->received < sizeof(t->head))
				continue;
			ret = check_header((const struct kmtrace_header *)t->head, &total);
			if (ret) {
				kmtrace_reset(t);
				return ret;
			}
			t->buf = vmalloc(total);
			if (!t->buf) {
				kmtrace_reset(t);
				return -ENOMEM;
			}
			t->size = total;
			memcpy(t->buf, t->head, sizeof(t->head));
			continue;
		}
		n = len - done;
		if (n > t->size - t->received) {
			pr_err("kmtrace_replay: bad trace: longer than the %zu bytes its header announces\n",
			       t->size);
			kmtrace_reset(t);
			return -EFBIG;
		}
		if (copy_from_user(t->buf + t->received, ubuf + done, n))
			return -EFAULT;
		t->received += n;
		done += n;
	}
	return len;
}

static u32 fnv1a(const u8 *p, size_t n)
{
	u32 h = 0x811c9dc5;

	while (n--)
		h = (h ^ *p++) * 0x01000193;
	return h;
}

static int check_caches(const struct kmtrace_cache *c, u32 n)
{
	u32 i;

	for (i = 0; i < n; i++) {
		size_t len = strnlen(c[i].name, KMTRACE_NAME_LEN);
		u32 size = le32_to_cpu(c[i].object_size);
		size_t j;

		if (!len || len == KMTRACE_NAME_LEN)
			return bad("cache %u: name empty or not NUL-terminated", i);
		for (j = 0; j < len; j++)
			if (!isgraph(c[i].name[j]))
				return bad("cache %u: name has a non-printable byte", i);
		if (c[i].reserved)
			return bad("cache %u: reserved field not 0", i);
		if (i == 0 && (strcmp(c[0].name, "kmalloc") || size))
			return bad("cache 0 must be \"kmalloc\" with object size 0");
		if (i > 0 && (!size || size > KMTRACE_MAX_OBJECT))
			return bad("cache %u (%s): object size %u", i, c[i].name, size);
	}
	return 0;
}

/* Every record in order: slots filled and emptied consistently, sizes and caches sane. */
static int check_records(const struct kmtrace *t)
{
	unsigned long *full;
	u16 *cache_of;
	u64 i;
	int ret = 0;

	full = bitmap_zalloc(t->nslots, GFP_KERNEL);
	cache_of = vmalloc(array_size(t->nslots ? t->nslots : 1, sizeof(*cache_of)));
	if (!full || !cache_of) {
		ret = -ENOMEM;
		goto out;
	}
	for (i = 0; i < t->nrecords; i++) {
		const struct kmtrace_record *r = &t->recs[i];
		u32 slot = le32_to_cpu(r->slot), bytes = le32_to_cpu(r->bytes);
		u16 cache = le16_to_cpu(r->cache);

		if (r->reserved || (r->op != KMTRACE_OP_ALLOC && r->op != KMTRACE_OP_FREE)) {
			ret = bad("record %llu: op %u", i, r->op);
			break;
		}
		if (slot >= t->nslots || cache >= t->ncaches) {
			ret = bad("record %llu: slot %u / cache %u out of range (%u slots, %u caches)",
				  i, slot, cache, t->nslots, t->ncaches);
			break;
		}
		if (r->op == KMTRACE_OP_ALLOC) {
			u32 want = le32_to_cpu(t->caches[cache].object_size);

			if (test_bit(slot, full)) {
				ret = bad("record %llu: alloc into slot %u, which is still live", i, slot);
				break;
			}
			if (!bytes || bytes > KMTRACE_MAX_OBJECT || (cache && bytes != want)) {
				ret = bad("record %llu: alloc of %u bytes from cache %u", i, bytes, cache);
				break;
			}
			__set_bit(slot, full);
			cache_of[slot] = cache;
		} else {
			if (!test_bit(slot, full)) {
				ret = bad("record %llu: free of slot %u, which is empty", i, slot);
				break;
			}
			if (bytes || cache != cache_of[slot]) {
				ret = bad("record %llu: free of slot %u names cache %u, allocated from %u",
					  i, slot, cache, cache_of[slot]);
				break;
			}
			__clear_bit(slot, full);
		}
	}
out:
	bitmap_free(full);
	vfree(cache_of);
	return ret;
}

int kmtrace_validate(struct kmtrace *t)
{
	const struct kmtrace_header *h = (const void *)t->buf;
	size_t want;
	int ret;

	if (t->valid)
		return 0;
	if (!t->buf)
		return bad("no trace written (%zu header bytes)", t->received);
	if (t->received != t->size)
		return bad("truncated: %zu of %zu bytes", t->received, t->size);
	t->ncaches = le32_to_cpu(h->ncaches);
	t->nslots = le32_to_cpu(h->nslots);
	t->nrecords = le64_to_cpu(h->nrecords);
	t->peak_record = le64_to_cpu(h->peak_record);
	t->peak_live_bytes = le64_to_cpu(h->peak_live_bytes);
	if (!t->ncaches || t->ncaches > KMTRACE_MAX_CACHES)
		return bad("%u caches (1..%u)", t->ncaches, KMTRACE_MAX_CACHES);
	if (t->nslots > KMTRACE_MAX_SLOTS)
		return bad("%u slots (at most %u)", t->nslots, KMTRACE_MAX_SLOTS);
	if (t->nrecords > KMTRACE_MAX_BYTES / sizeof(struct kmtrace_record))
		return bad("%llu records", t->nrecords);
	want = sizeof(*h) + t->ncaches * sizeof(struct kmtrace_cache) +
	       t->nrecords * sizeof(struct kmtrace_record);
	if (want != t->size)
		return bad("%zu bytes, but %u caches and %llu records take %zu",
			   t->size, t->ncaches, t->nrecords, want);
	if (t->nrecords && t->peak_record >= t->nrecords)
		return bad("peak record %llu of %llu", t->peak_record, t->nrecords);
	if (h->reserved)
		return bad("reserved header field not 0");
	if (fnv1a(t->buf + sizeof(*h), t->size - sizeof(*h)) != le32_to_cpu(h->checksum))
		return bad("checksum mismatch (corrupted in transit?)");
	t->caches = (const void *)(t->buf + sizeof(*h));
	t->recs = (const void *)(t->caches + t->ncaches);
	ret = check_caches(t->caches, t->ncaches);
	if (!ret)
		ret = check_records(t);
	if (ret)
		return ret;
	t->valid = true;
	pr_info("kmtrace_replay: trace ok: %llu records, %u caches, %u slots, peak %llu live bytes at record %llu\n",
		t->nrecords, t->ncaches, t->nslots, t->peak_live_bytes, t->peak_record);
	return 0;
}
