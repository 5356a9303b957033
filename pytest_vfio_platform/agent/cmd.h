/* SPDX-License-Identifier: MIT */
/*
 * cmd.h — the parsed command line (filled by parse_args() in vfio-agent.c)
 * and the commands that run on an opened device.  Each handler appends its
 * members to the JSON body and returns 0, or -1 with g_err set.
 */
#ifndef VFIO_AGENT_CMD_H
#define VFIO_AGENT_CMD_H

#include <stdbool.h>
#include <stdint.h>

#include "ops.h"
#include "vfio.h"

enum cmd { CMD_NONE, CMD_INFO, CMD_READ, CMD_IRQ };

struct args {
	enum cmd cmd;
	const char *cmd_name;
	enum sel sel;
	uint32_t group;
	const char *cdev;
	const char *device;
	enum iommu_kind iommu;
	/* read */
	bool have_region;
	uint32_t region;
	struct u64_list offsets;
	uint32_t width;
	enum via via;
	bool have_via;
	bool have_width;
	/* irq */
	bool have_index;
	uint32_t index;
	bool have_timeout;
	uint32_t timeout_ms;
	bool have_count;
	uint32_t count;
	struct op_list setup, ack;
	const char *ready_file;
	enum via ops_via;
	bool have_ops_via;
	bool hold; /* irq: after setup, keep the device until a signal */
	bool dry_run;
};

int cmd_info(const struct args *a, struct session *s);
int cmd_read(const struct args *a, struct session *s);
int cmd_irq(const struct args *a, struct session *s);

#endif
