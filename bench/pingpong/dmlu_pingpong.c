// SPDX-License-Identifier: GPL-2.0
/*
 * dmlu_pingpong: the bare netlink-connector round trip, measured in the kernel.
 *
 * The floor under a dm-log-userspace request: the same path (cn_netlink_send to connector
 * group 7, a userspace process answering through its netlink socket, the connector callback
 * waking the waiting thread through a completion), without a log module or a log server.
 * The echo side is `dm-ulog-bench echo`.
 *
 *   echo N > /sys/kernel/debug/dmlu_pingpong/run   # N messages, one at a time (blocks)
 *   cat /sys/kernel/debug/dmlu_pingpong/results    # count, timeouts, p50/p99/mean/min/max in ns
 *
 * The connector id is (CN_IDX_DM, 0x10): group 7 like the log, but not the log's values
 * (1: requests and replies, 2: server announcements), so a log module can stay loaded. A log
 * server in group 7 would see these messages too: do not run one during a measurement.
 */

#include <linux/capability.h>
#include <linux/completion.h>
#include <linux/connector.h>
#include <linux/debugfs.h>
#include <linux/fs.h>
#include <linux/ktime.h>
#include <linux/math64.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/seq_file.h>
#include <linux/slab.h>
#include <linux/sort.h>
#include <linux/spinlock.h>

#define PP_VAL 0x10
/* Messages in one run at most (8 MiB of samples). */
#define PP_MAX_COUNT 1000000
/* How long one echo may take before it counts as lost. */
#define PP_ECHO_TIMEOUT_MS 2000
/* A run ends early after this many lost echoes (no echo process, most likely). */
#define PP_MAX_TIMEOUTS 3

static unsigned int payload = 160;
module_param(payload, uint, 0444);
MODULE_PARM_DESC(payload,
		 "bytes after the cn_msg header in each message (default 160, the size of a dm_ulog_request header)");

static const struct cb_id pp_id = { .idx = CN_IDX_DM, .val = PP_VAL };

/* One run at a time; also guards pp_results. */
static DEFINE_MUTEX(pp_run_lock);

/*
 * The message being waited for. The callback completes pp_echoed only for the seq the run
 * waits for, so a late echo of an earlier message cannot end a later wait.
 */
static DEFINE_SPINLOCK(pp_wait_lock);
static bool pp_waiting;
static u32 pp_waiting_seq;
static DECLARE_COMPLETION(pp_echoed);

struct pp_results {
	u64 count;
	u64 timeouts;
	u64 send_errors;
	u64 p50_ns;
	u64 p99_ns;
	u64 mean_ns;
	u64 min_ns;
	u64 max_ns;
};
static struct pp_results pp_results;
static u32 pp_next_seq;

static struct dentry *pp_dir;

/* Runs in the context of the process that sent the echo. */
static void pp_callback(struct cn_msg *msg, struct netlink_skb_parms *nsp)
{
	/* As dm-log-userspace does: only a privileged process may answer. */
	if (!capable(CAP_SYS_ADMIN))
		return;

	spin_lock(&pp_wait_lock);
	if (pp_waiting && msg->seq == pp_waiting_seq) {
		pp_waiting = false;
		complete(&pp_echoed);
	}
	spin_unlock(&pp_wait_lock);
}

static void pp_stop_waiting(void)
{
	spin_lock(&pp_wait_lock);
	pp_waiting = false;
	spin_unlock(&pp_wait_lock);
}

static int pp_cmp_u64(const void *a, const void *b)
{
	u64 x = *(const u64 *)a, y = *(const u64 *)b;

	return x < y ? -1 : x > y;
}

/* The nearest-rank percentile of n sorted samples (n > 0). */
static u64 pp_percentile(const u64 *sorted, u32 n, u32 percent)
{
	u32 rank = DIV_ROUND_UP(n * (u64)percent, 100);

	return sorted[max(rank, 1U) - 1];
}

/* Sends n messages one at a time, each after the echo of the one before. */
static int pp_run(u32 n)
{
	struct pp_results res = {};
	struct cn_msg *msg;
	u64 *lat, sum = 0;
	u32 done = 0, i;
	int err = 0;

	lat = kvmalloc_array(n, sizeof(*lat), GFP_KERNEL);
	msg = kzalloc(sizeof(*msg) + payload, GFP_KERNEL);
	if (!lat || !msg) {
		err = -ENOMEM;
		goto out;
	}
	msg->id = pp_id;
	msg->len = payload;

	for (i = 0; i < n; i++) {
		long left;
		u64 t0;
		int r;

		msg->seq = pp_next_seq++;
		reinit_completion(&pp_echoed);
		spin_lock(&pp_wait_lock);
		pp_waiting_seq = msg->seq;
		pp_waiting = true;
		spin_unlock(&pp_wait_lock);

		t0 = ktime_get_ns();
		r = cn_netlink_send(msg, 0, CN_IDX_DM, GFP_KERNEL);
		if (r) {
			pp_stop_waiting();
			res.send_errors++;
			/* -ESRCH: nobody listens on group 7. */
			err = r;
			break;
		}
		left = wait_for_completion_killable_timeout(&pp_echoed,
							    msecs_to_jiffies(PP_ECHO_TIMEOUT_MS));
		if (left > 0) {
			lat[done++] = ktime_get_ns() - t0;
			continue;
		}
		pp_stop_waiting();
		if (left < 0) {
			err = left;
			break;
		}
		if (++res.timeouts >= PP_MAX_TIMEOUTS) {
			err = -ETIMEDOUT;
			break;
		}
	}

	res.count = done;
	if (done) {
		sort(lat, done, sizeof(*lat), pp_cmp_u64, NULL);
		for (i = 0; i < done; i++)
			sum += lat[i];
		res.p50_ns = pp_percentile(lat, done, 50);
		res.p99_ns = pp_percentile(lat, done, 99);
		res.mean_ns = div_u64(sum, done);
		res.min_ns = lat[0];
		res.max_ns = lat[done - 1];
	}
	pp_results = res;
out:
	kfree(msg);
	kvfree(lat);
	return err;
}

static ssize_t pp_run_write(struct file *file, const char __user *buf, size_t len, loff_t *ppos)
{
	u32 n;
	int err;

	err = kstrtou32_from_user(buf, len, 0, &n);
	if (err)
		return err;
	if (n == 0 || n > PP_MAX_COUNT)
		return -EINVAL;
	err = mutex_lock_killable(&pp_run_lock);
	if (err)
		return err;
	err = pp_run(n);
	mutex_unlock(&pp_run_lock);
	return err ? err : len;
}

static const struct file_operations pp_run_fops = {
	.owner = THIS_MODULE,
	.open = simple_open,
	.write = pp_run_write,
	.llseek = noop_llseek,
};

static int pp_results_show(struct seq_file *m, void *unused)
{
	struct pp_results res;
	int err;

	err = mutex_lock_killable(&pp_run_lock);
	if (err)
		return err;
	res = pp_results;
	mutex_unlock(&pp_run_lock);

	seq_printf(m, "payload %u\n", payload);
	seq_printf(m, "count %llu\n", res.count);
	seq_printf(m, "timeouts %llu\n", res.timeouts);
	seq_printf(m, "send_errors %llu\n", res.send_errors);
	seq_printf(m, "p50_ns %llu\n", res.p50_ns);
	seq_printf(m, "p99_ns %llu\n", res.p99_ns);
	seq_printf(m, "mean_ns %llu\n", res.mean_ns);
	seq_printf(m, "min_ns %llu\n", res.min_ns);
	seq_printf(m, "max_ns %llu\n", res.max_ns);
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(pp_results);

static int __init pp_init(void)
{
	int err;

	if (payload > CONNECTOR_MAX_MSG_SIZE)
		return -EINVAL;
	pp_dir = debugfs_create_dir("dmlu_pingpong", NULL);
	debugfs_create_file("run", 0200, pp_dir, NULL, &pp_run_fops);
	debugfs_create_file("results", 0444, pp_dir, NULL, &pp_results_fops);
	err = cn_add_callback(&pp_id, "dmlu_pingpong", pp_callback);
	if (err) {
		debugfs_remove_recursive(pp_dir);
		return err;
	}
	return 0;
}

static void __exit pp_exit(void)
{
	/* No new runs (an open file holds the module), then no callback in flight. */
	debugfs_remove_recursive(pp_dir);
	cn_del_callback(&pp_id);
}

module_init(pp_init);
module_exit(pp_exit);

MODULE_DESCRIPTION("Bare netlink connector round trip, the floor under dm-log-userspace requests");
MODULE_LICENSE("GPL");
