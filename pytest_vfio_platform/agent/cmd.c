// SPDX-License-Identifier: MIT
/*
 * cmd.c — the commands info, read and irq (see cmd.h and README.md).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "agent.h"
#include "cmd.h"
#include "json.h"
#include "ops.h"
#include "vfio.h"

/* ======================================================================== */
/* Time                                                                     */
/* ======================================================================== */

static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000.0 + ts.tv_nsec / 1e6;
}

static void sleep_ms(uint32_t ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
}

/* ======================================================================== */
/* Register ops                                                             */
/* ======================================================================== */

/* Run ops, appending one object per op to the open "ops" array. */
static int run_ops(struct region *r, const struct op_list *l,
		   const char *phase, long event)
{
	size_t k;

	for (k = 0; k < l->n; k++) {
		const struct reg_op *op = &l->v[k];
		uint64_t old = 0;
		uint32_t nv;
		int rc = 0;

		jobj(NULL);
		jstr("phase", phase);
		if (event > 0)
			jint("event", event);
		jstr("op", op_letters[op->kind]);
		switch (op->kind) {
		case OP_DELAY:
			juint("ms", op->off);
			sleep_ms(op->off);
			break;
		case OP_WRITE:
			juint("offset", op->off);
			jhexw("value", op->val, 4);
			rc = region_write32(r, op->off, op->val);
			break;
		case OP_READ:
			juint("offset", op->off);
			rc = region_read(r, op->off, 4, &old);
			if (!rc)
				jhexw("value", old, 4);
			break;
		case OP_SET:
		case OP_CLEAR:
			juint("offset", op->off);
			jhexw("mask", op->val, 4);
			rc = region_read(r, op->off, 4, &old);
			if (rc)
				break;
			nv = op->kind == OP_SET ? ((uint32_t)old | op->val) :
						  ((uint32_t)old & ~op->val);
			jhexw("old", old, 4);
			jhexw("new", nv, 4);
			rc = region_write32(r, op->off, nv);
			break;
		}
		jclose();
		if (rc)
			return -1;
	}
	return 0;
}

/* ======================================================================== */
/* Commands                                                                 */
/* ======================================================================== */

int cmd_info(const struct args *a, struct session *s)
{
	struct vfio_device_info di;
	uint32_t i;

	(void)a;
	if (get_device_info(s->device_fd, &di) < 0)
		return -1;
	jdevice_info(&di);

	jarr("regions");
	for (i = 0; i < di.num_regions; i++) {
		struct vfio_region_info ri;

		if (get_region_info(s->device_fd, i, &ri) < 0)
			return -1;
		jobj(NULL);
		jregion_members(&ri);
		juint("argsz", ri.argsz);
		jclose();
	}
	jclose();

	jarr("irqs");
	for (i = 0; i < di.num_irqs; i++) {
		struct vfio_irq_info ii;

		if (get_irq_info(s->device_fd, i, &ii) < 0)
			return -1;
		jobj(NULL);
		jirq_members(&ii);
		jclose();
	}
	jclose();
	return 0;
}

int cmd_read(const struct args *a, struct session *s)
{
	struct vfio_device_info di;
	struct region r;
	size_t k;
	int rc = 0;

	if (get_device_info(s->device_fd, &di) < 0)
		return -1;
	jdevice_info(&di);
	if (a->region >= di.num_regions)
		return fail("region_index", 0,
			    "--region %u but the device has %u regions",
			    a->region, di.num_regions);

	jstr("via", a->via == VIA_MMAP ? "mmap" : "pread");
	juint("width", a->width);
	if (region_open(s->device_fd, a->region, a->via, &r) < 0) {
		if (r.ri.argsz) {
			jobj("region");
			jregion_members(&r.ri);
			jclose();
		}
		return -1;
	}
	jobj("region");
	jregion_members(&r.ri);
	jclose();

	jarr("values");
	for (k = 0; k < a->offsets.n; k++) {
		uint64_t v;

		if (region_read(&r, a->offsets.v[k], a->width, &v) < 0) {
			rc = -1;
			break;
		}
		jobj(NULL);
		juint("offset", a->offsets.v[k]);
		jhexw("value", v, (int)a->width);
		jclose();
	}
	jclose();
	region_close(&r);
	return rc;
}

static int write_ready_file(const char *path)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	static const char msg[] = "ready\n";

	if (fd < 0)
		return fail("ready_file", errno, "%s", path);
	if (write(fd, msg, sizeof(msg) - 1) != (ssize_t)(sizeof(msg) - 1) ||
	    fsync(fd) < 0) {
		int e = errno;

		close(fd);
		return fail("ready_file", e, "%s", path);
	}
	close(fd);
	return 0;
}

struct irq_event {
	double t;
	uint64_t counter;
};

int cmd_irq(const struct args *a, struct session *s)
{
	struct vfio_device_info di;
	struct vfio_irq_info ii;
	struct region r = { .fd = -1 };
	bool need_region = a->setup.n || a->ack.n;
	bool armed = false, ops_open = false, maskable, timed_out = false;
	int efd = -1, rc = -1;
	double t_arm = 0, t_ready = -1, t_end = 0;
	uint32_t received = 0, k;
	uint64_t interrupts = 0;
	struct irq_event *ev = NULL;
	int32_t efd32;

	if (get_device_info(s->device_fd, &di) < 0)
		return -1;
	jdevice_info(&di);
	if (a->index >= di.num_irqs)
		return fail("irq_index", 0,
			    "--index %u but the device has %u irqs", a->index,
			    di.num_irqs);
	if (get_irq_info(s->device_fd, a->index, &ii) < 0)
		return -1;
	jobj("irq_info");
	jirq_members(&ii);
	jclose();
	maskable = ii.flags & VFIO_IRQ_INFO_MASKABLE;
	juint("index", a->index);
	juint("count", a->count);
	juint("timeout_ms", a->timeout_ms);
	jstr("unmask", maskable ? "after_each_event" : "skipped_not_maskable");
	jstr("ops_via", !need_region ? NULL :
			a->ops_via == VIA_MMAP ? "mmap" : "pread");
	jstr("ready_file", a->ready_file);

	ev = calloc(a->count, sizeof(*ev));
	if (!ev)
		return fail("calloc", ENOMEM, NULL);
	if (need_region && region_open(s->device_fd, 0, a->ops_via, &r) < 0)
		goto out;

	efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (efd < 0) {
		fail("eventfd", errno, NULL);
		goto out;
	}
	efd32 = efd;
	if (set_irqs(s->device_fd,
		     VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER,
		     a->index, 1, &efd32,
		     "VFIO_DEVICE_SET_IRQS(TRIGGER,EVENTFD)") < 0)
		goto out;
	armed = true;
	t_arm = now_ms();

	/* Setup ops, then one ack group per event, all in one "ops" log. */
	jarr("ops");
	ops_open = true;
	if (run_ops(&r, &a->setup, "setup", 0) < 0)
		goto out;

	if (a->ready_file && write_ready_file(a->ready_file) < 0)
		goto out;
	t_ready = now_ms();
	if (a->hold) {
		/* A user that configured the device and dies holding it: the
		 * eventfd is never read, a level interrupt stays masked. */
		jbool("held", true);
		diag("armed irq %u of %s; holding it until a signal", a->index,
		     a->device);
		while (!g_signal)
			pause();
		rc = 0;
		goto out;
	}
	diag("armed irq %u of %s; waiting for %u event(s), %u ms", a->index,
	     a->device, a->count, a->timeout_ms);

	while (received < a->count && !g_signal) {
		struct pollfd pfd = { .fd = efd, .events = POLLIN };
		double left = t_ready + a->timeout_ms - now_ms();
		struct timespec ts;
		uint64_t cnt;
		int pr;

		if (left < 0)
			left = 0;
		ts.tv_sec = (time_t)(left / 1000);
		ts.tv_nsec = (long)((left - ts.tv_sec * 1000.0) * 1e6);
		if (ts.tv_nsec >= 1000000000L)
			ts.tv_nsec = 999999999L;
		pr = ppoll(&pfd, 1, &ts, NULL);
		if (pr < 0) {
			if (errno == EINTR)
				continue;
			fail("poll", errno, NULL);
			goto out;
		}
		if (pr == 0) {
			timed_out = true;
			break;
		}
		if (read(efd, &cnt, sizeof(cnt)) != (ssize_t)sizeof(cnt)) {
			if (errno == EAGAIN || errno == EINTR)
				continue;
			fail("eventfd_read", errno, NULL);
			goto out;
		}
		ev[received].t = now_ms();
		ev[received].counter = cnt;
		interrupts += cnt;
		received++;
		if (run_ops(&r, &a->ack, "ack", (long)received) < 0)
			goto out;
		if (maskable &&
		    set_irqs(s->device_fd,
			     VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_UNMASK,
			     a->index, 1, NULL,
			     "VFIO_DEVICE_SET_IRQS(UNMASK,DATA_NONE)") < 0)
			goto out;
	}
	rc = 0;

out:
	t_end = now_ms();
	if (ops_open)
		jclose(); /* ops */
	if (armed) {
		/* Always disable the trigger, even after a failure. */
		int dr = set_irqs(s->device_fd,
				  VFIO_IRQ_SET_DATA_NONE |
					  VFIO_IRQ_SET_ACTION_TRIGGER,
				  a->index, 0, NULL,
				  "VFIO_DEVICE_SET_IRQS(TRIGGER,DATA_NONE,count=0)");

		jbool("trigger_disabled", dr == 0);
		if (dr < 0)
			rc = -1;

		jarr("events");
		for (k = 0; k < received; k++) {
			jobj(NULL);
			juint("n", k + 1);
			juint("counter", ev[k].counter);
			jms("latency_ms", ev[k].t - t_arm);
			if (t_ready >= 0)
				jms("since_ready_ms", ev[k].t - t_ready);
			else
				jnull("since_ready_ms");
			jclose();
		}
		jclose();
		juint("received", received);
		juint("interrupts", interrupts);
		jbool("timed_out", timed_out);
		if (g_signal)
			jint("signal", g_signal);
		else
			jnull("signal");
		if (t_ready >= 0)
			jms("ready_ms", t_ready - t_arm);
		else
			jnull("ready_ms");
		jms("elapsed_ms", t_end - t_arm);
	}
	free(ev);
	if (efd >= 0)
		close(efd);
	region_close(&r);
	return rc;
}
