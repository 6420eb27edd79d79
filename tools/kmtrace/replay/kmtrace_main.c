// SPDX-License-Identifier: GPL-2.0
/*
 * kmtrace_replay.ko: the debugfs interface, /sys/kernel/debug/kmtrace_replay/:
 *
 *   trace    (write)  the binary trace, in order, in chunks of any size (cat trace.bin >trace);
 *                     a write at offset 0 starts a new trace
 *   run      (write)  "slub-caches", "slub-kmalloc", "slub-merged" or "kmalloc43 LABEL" (the
 *                     backends are described in kmtrace_backends.c): validate the trace
 *                     (once) and replay it through that allocator; the write fails with
 *                     -EINVAL on a bad or truncated trace (pr_err says why), -ENOMEM if an
 *                     allocation of the replay failed
 *   results  (read)   one line of key=value per replay run so far (Documentation/kmtrace.rst)
 *   series   (read)   label,record,pages: pages held over the trace, for the plot
 *
 * Process context only; one operation at a time (a mutex).
 */

#include <linux/debugfs.h>
#include <linux/fs.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/seq_file.h>
#include <linux/slab.h>
#include <linux/string.h>
#include <linux/uaccess.h>

#include "kmtrace_replay.h"

#define KMTRACE_MAX_RESULTS	8

static DEFINE_MUTEX(lock);
static struct kmtrace trace;
static struct kmtrace_result *results[KMTRACE_MAX_RESULTS];
static unsigned int nresults;
static struct dentry *dir;

static ssize_t trace_write(struct file *f, const char __user *ubuf, size_t len, loff_t *pos)
{
	ssize_t ret;

	mutex_lock(&lock);
	ret = kmtrace_receive(&trace, ubuf, len, *pos);
	if (ret > 0)
		*pos += ret;
	mutex_unlock(&lock);
	return ret;
}

static const struct file_operations trace_fops = {
	.owner = THIS_MODULE,
	.write = trace_write,
};

/* "kmalloc43 LABEL" -> label "kmalloc43-LABEL"; LABEL is [a-z0-9_] (the class mode). */
static int parse_run(char *cmd, const struct kmtrace_backend **b, char *label)
{
	char *arg;

	cmd = strim(cmd);
	arg = strchr(cmd, ' ');
	if (arg)
		*arg++ = '\0';
	if (!strcmp(cmd, "slub-caches") && !arg) {
		*b = &kmtrace_slub_caches;
	} else if (!strcmp(cmd, "slub-kmalloc") && !arg) {
		*b = &kmtrace_slub_kmalloc;
	} else if (!strcmp(cmd, "slub-merged") && !arg) {
		*b = &kmtrace_slub_merged;
	} else if (!strcmp(cmd, "kmalloc43") && arg && *arg) {
		const char *c;

		if (strlen(arg) > 16)
			return -EINVAL;
		for (c = arg; *c; c++)
			if (!islower(*c) && !isdigit(*c) && *c != '_')
				return -EINVAL;
		*b = &kmtrace_kmalloc43;
		snprintf(label, KMTRACE_LABEL_LEN, "kmalloc43-%s", arg);
		return 0;
	} else {
		return -EINVAL;
	}
	strscpy(label, (*b)->name, KMTRACE_LABEL_LEN);
	return 0;
}

static ssize_t run_write(struct file *f, const char __user *ubuf, size_t len, loff_t *pos)
{
	const struct kmtrace_backend *b;
	struct kmtrace_result *res;
	char cmd[48];
	int ret;

	if (len >= sizeof(cmd))
		return -EINVAL;
	if (copy_from_user(cmd, ubuf, len))
		return -EFAULT;
	cmd[len] = '\0';
	res = kzalloc_obj(*res);
	if (!res)
		return -ENOMEM;
	ret = parse_run(cmd, &b, res->label);
	if (ret) {
		pr_err("kmtrace_replay: run: expected slub-caches, slub-kmalloc, slub-merged or 'kmalloc43 LABEL'\n");
		goto out;
	}
	res->is_k43 = b == &kmtrace_kmalloc43;
	mutex_lock(&lock);
	ret = nresults < KMTRACE_MAX_RESULTS ? kmtrace_validate(&trace) : -ENOSPC;
	if (!ret)
		ret = kmtrace_replay(&trace, b, res);
	if (!ret) {
		pr_info("kmtrace_replay: %s: peak %ld pages, %ld at the trace's peak, %llu ns/op\n",
			res->label, res->peak_pages, res->pages_at_peak,
			trace.nrecords ? div64_u64(res->best_ns, trace.nrecords) : 0);
		results[nresults++] = res;
		res = NULL;
	}
	mutex_unlock(&lock);
out:
	kfree(res);
	return ret ? ret : len;
}

static const struct file_operations run_fops = {
	.owner = THIS_MODULE,
	.write = run_write,
};

static int results_show(struct seq_file *m, void *v)
{
	unsigned int i, j;

	mutex_lock(&lock);
	for (i = 0; i < nresults; i++) {
		const struct kmtrace_result *r = results[i];

		seq_printf(m, "label=%s records=%llu caches=%u slots=%u peak_record=%llu peak_live_bytes=%llu",
			   r->label, trace.nrecords, trace.ncaches, trace.nslots, trace.peak_record,
			   trace.peak_live_bytes);
		seq_printf(m, " base_pages=%ld peak_pages=%ld peak_pages_record=%llu pages_at_peak=%ld pages_left=%ld",
			   r->base_pages, r->peak_pages, r->peak_pages_record, r->pages_at_peak,
			   r->pages_left);
		if (r->idled)
			seq_printf(m, " pages_idle=%ld idle_passes=%u", r->pages_idle, r->idle_passes);
		if (r->is_k43)
			seq_printf(m, " data_pages=%ld map_pages=%ld diag_pages=%ld tag_pages=%ld inuse_bytes=%llu",
				   r->k43_at_peak.data, r->k43_at_peak.map, r->k43_at_peak.diag,
				   r->k43_at_peak.tags, r->k43_at_peak.inuse_bytes);
		seq_printf(m, " ns_best=%llu ref_ns_best=%llu ns=", r->best_ns, r->ref_best_ns);
		for (j = 0; j < KMTRACE_TIMED_RUNS; j++)
			seq_printf(m, "%s%llu", j ? "," : "", r->ns[j]);
		seq_puts(m, " ref_ns=");
		for (j = 0; j < KMTRACE_TIMED_RUNS; j++)
			seq_printf(m, "%s%llu", j ? "," : "", r->ref_ns[j]);
		seq_putc(m, '\n');
	}
	mutex_unlock(&lock);
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(results);

static int series_show(struct seq_file *m, void *v)
{
	unsigned int i, j;

	seq_puts(m, "label,record,pages\n");
	mutex_lock(&lock);
	for (i = 0; i < nresults; i++) {
		const struct kmtrace_result *r = results[i];

		for (j = 0; j < r->nsamples; j++)
			seq_printf(m, "%s,%llu,%d\n", r->label,
				   min_t(u64, (u64)(j + 1) * r->stride, trace.nrecords),
				   r->samples[j]);
	}
	mutex_unlock(&lock);
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(series);

static int __init kmtrace_replay_init(void)
{
	dir = debugfs_create_dir("kmtrace_replay", NULL);
	if (IS_ERR(dir))
		return PTR_ERR(dir);
	debugfs_create_file("trace", 0200, dir, NULL, &trace_fops);
	debugfs_create_file("run", 0200, dir, NULL, &run_fops);
	debugfs_create_file("results", 0400, dir, NULL, &results_fops);
	debugfs_create_file("series", 0400, dir, NULL, &series_fops);
	return 0;
}

static void __exit kmtrace_replay_exit(void)
{
	unsigned int i;

	debugfs_remove(dir);
	for (i = 0; i < nresults; i++)
		kfree(results[i]);
	kmtrace_reset(&trace);
}

module_init(kmtrace_replay_init);
module_exit(kmtrace_replay_exit);
MODULE_DESCRIPTION("Replays a kmalloc trace through kmalloc43 and SLUB (tools/kmtrace)");
MODULE_LICENSE("GPL");
