// SPDX-License-Identifier: MIT
/*
 * vfio-agent — the on-target agent of pytest-vfio-platform.
 *
 * Drives the Linux VFIO UAPI for ONE device and prints ONE JSON object (one
 * line, 7-bit ASCII) on stdout.  Diagnostics go to stderr, every line
 * prefixed "vfio-agent: ".  See README.md beside this file for the command
 * line and the JSON schema; the two must be kept in step.
 *
 * C11 (gnu11), libc + kernel UAPI headers only; built static for arm64.
 *
 * This file: the command line (options, the command table, parse_args),
 * the JSON envelope (emit) and main.  The rest: agent.[ch] diagnostics and
 * errors, json.[ch] the JSON writer, ops.[ch] number/OPS/offset parsing,
 * vfio.[ch] the VFIO UAPI, cmd.[ch] the commands info, read and irq.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "agent.h"
#include "cmd.h"
#include "json.h"
#include "ops.h"
#include "vfio.h"

/* ======================================================================== */
/* Command line                                                             */
/* ======================================================================== */

static const char *const path_names[] = {
	[SEL_NONE] = NULL,
	[SEL_GROUP] = "group",
	[SEL_CDEV] = "cdev",
	[SEL_NOIOMMU] = "noiommu",
};

static const char usage_text[] =
	"usage:\n"
	"  vfio-agent info SELECTOR --device NAME [--iommu KIND]\n"
	"  vfio-agent read SELECTOR --device NAME --region I --offset OFF[,OFF...]\n"
	"                  [--width 1|2|4|8] [--via mmap|pread] [--iommu KIND]\n"
	"  vfio-agent irq  SELECTOR --device NAME --index I --timeout-ms T [--count K]\n"
	"                  [--setup OPS] [--ack OPS] [--ready-file PATH]\n"
	"                  [--ops-via mmap|pread] [--iommu KIND]\n"
	"  vfio-agent irq  SELECTOR --device NAME --index I --hold [--setup OPS]\n"
	"                  [--ready-file PATH]   arm, set up, then hold the device\n"
	"                  until a signal: a user that dies holding it\n"
	"  vfio-agent --help | --version\n"
	"SELECTOR (exactly one):\n"
	"  --group N               /dev/vfio/N + container /dev/vfio/vfio\n"
	"  --noiommu-group N       /dev/vfio/noiommu-N + container (VFIO_NOIOMMU_IOMMU)\n"
	"  --cdev PATH             /dev/vfio/devices/vfioX + /dev/iommu (iommufd)\n"
	"KIND (group paths only): type1v2 (default for --group), type1,\n"
	"  noiommu (default for --noiommu-group), none (no VFIO_SET_IOMMU)\n"
	"OPS (on region 0, comma-separated, 32-bit):\n"
	"  w:OFF=VAL  r:OFF  s:OFF|=VAL (or s:OFF=VAL)  c:OFF&=~VAL (or c:OFF=VAL)  d:MS\n"
	"Numbers: decimal or 0x hex.  Options: --opt VALUE or --opt=VALUE.\n"
	"Output: one JSON object on stdout; exit 0 ok, 1 failure, 2 usage error.\n"
	"  -v, --verbose           trace each step on stderr\n"
	"  --dry-run               print the parsed arguments as JSON, touch nothing\n";

/* Printed on stderr after a usage error (the full text is --help). */
static const char usage_short[] =
	"usage: vfio-agent info|read|irq (--group N | --cdev PATH | --noiommu-group N)\n"
	"                  --device NAME [command options]; vfio-agent --help for all\n";

/* Option table: which commands accept which option. */
#define C_INFO (1u << CMD_INFO)
#define C_READ (1u << CMD_READ)
#define C_IRQ (1u << CMD_IRQ)
#define C_ALL (C_INFO | C_READ | C_IRQ)

enum opt_id {
	O_GROUP, O_CDEV, O_NOIOMMU_GROUP, O_DEVICE, O_IOMMU, O_REGION, O_OFFSET,
	O_WIDTH, O_VIA, O_INDEX, O_TIMEOUT, O_COUNT, O_SETUP, O_ACK, O_READY,
	O_OPS_VIA,
};

static const struct {
	const char *name;
	enum opt_id id;
	unsigned cmds;
} opt_table[] = {
	{ "--group", O_GROUP, C_ALL },
	{ "--cdev", O_CDEV, C_ALL },
	{ "--noiommu-group", O_NOIOMMU_GROUP, C_ALL },
	{ "--device", O_DEVICE, C_ALL },
	{ "--iommu", O_IOMMU, C_ALL },
	{ "--region", O_REGION, C_READ },
	{ "--offset", O_OFFSET, C_READ },
	{ "--width", O_WIDTH, C_READ },
	{ "--via", O_VIA, C_READ },
	{ "--index", O_INDEX, C_IRQ },
	{ "--timeout-ms", O_TIMEOUT, C_IRQ },
	{ "--count", O_COUNT, C_IRQ },
	{ "--setup", O_SETUP, C_IRQ },
	{ "--ack", O_ACK, C_IRQ },
	{ "--ready-file", O_READY, C_IRQ },
	{ "--ops-via", O_OPS_VIA, C_IRQ },
};

static void print_help(void)
{
	fputs(usage_text, stdout);
}

static void print_version(void)
{
	printf("vfio-agent %s (json schema %d)\n", AGENT_VERSION,
	       JSON_SCHEMA_VERSION);
}

/*
 * The command table: argv[1] -> what runs.  A device command (run) opens
 * the device and prints one JSON line; a text command (print) only prints
 * plain text on stdout and exits 0.
 */
struct command {
	const char *name;
	enum cmd cmd;
	int (*run)(const struct args *a, struct session *s);
	void (*print)(void);
};

static const struct command commands[] = {
	{ "info", CMD_INFO, cmd_info, NULL },
	{ "read", CMD_READ, cmd_read, NULL },
	{ "irq", CMD_IRQ, cmd_irq, NULL },
	{ "--help", CMD_NONE, NULL, print_help },
	{ "-h", CMD_NONE, NULL, print_help },
	{ "help", CMD_NONE, NULL, print_help },
	{ "--version", CMD_NONE, NULL, print_version },
};

static const struct command *find_command(const char *name)
{
	size_t k;

	for (k = 0; k < sizeof(commands) / sizeof(commands[0]); k++)
		if (!strcmp(commands[k].name, name))
			return &commands[k];
	return NULL;
}

static int set_selector(struct args *a, enum sel s, const char *opt,
			const char *val)
{
	if (a->sel != SEL_NONE)
		return usage_err("only one of --group, --cdev, --noiommu-group may be given");
	a->sel = s;
	if (s == SEL_CDEV) {
		if (!*val)
			return usage_err("%s: empty path", opt);
		a->cdev = val;
	} else if (!parse_u32(val, &a->group)) {
		return usage_err("%s: bad group number '%s'", opt, val);
	}
	return 0;
}

static int parse_via(const char *opt, const char *val, enum via *v)
{
	if (!strcmp(val, "mmap"))
		*v = VIA_MMAP;
	else if (!strcmp(val, "pread"))
		*v = VIA_PREAD;
	else
		return usage_err("%s: expected mmap or pread, got '%s'", opt, val);
	return 0;
}

/*
 * Fill a and *cmd from argv.  Returns 0 ok, -1 usage error (g_usage_msg),
 * 1 help/version printed.
 */
static int parse_args(int argc, char **argv, struct args *a,
		      const struct command **cmd)
{
	int i;

	memset(a, 0, sizeof(*a));
	a->width = 4;
	a->count = 1;

	*cmd = NULL;
	if (argc < 2)
		return usage_err("missing command (info, read or irq)");
	*cmd = find_command(argv[1]);
	if (!*cmd)
		return usage_err("unknown command '%s' (expected info, read or irq)",
				 argv[1]);
	if ((*cmd)->print) {
		(*cmd)->print();
		return 1;
	}
	a->cmd = (*cmd)->cmd;
	a->cmd_name = (*cmd)->name;

	for (i = 2; i < argc; i++) {
		const char *arg = argv[i], *val = NULL;
		char name[64];
		const char *eq;
		size_t k, nlen;
		int found = -1;

		if (!strcmp(arg, "-v") || !strcmp(arg, "--verbose")) {
			g_verbose = true;
			continue;
		}
		if (!strcmp(arg, "--dry-run")) {
			a->dry_run = true;
			continue;
		}
		if (!strcmp(arg, "--hold")) {
			if (a->cmd != CMD_IRQ)
				return usage_err("option --hold is not valid for '%s'",
						 a->cmd_name);
			a->hold = true;
			continue;
		}
		if (!strcmp(arg, "--help") || !strcmp(arg, "-h")) {
			print_help();
			return 1;
		}
		if (strncmp(arg, "--", 2))
			return usage_err("unexpected argument '%s'", arg);
		eq = strchr(arg, '=');
		nlen = eq ? (size_t)(eq - arg) : strlen(arg);
		if (nlen >= sizeof(name))
			return usage_err("unknown option '%.40s...'", arg);
		memcpy(name, arg, nlen);
		name[nlen] = '\0';
		for (k = 0; k < sizeof(opt_table) / sizeof(opt_table[0]); k++)
			if (!strcmp(opt_table[k].name, name))
				found = (int)k;
		if (found < 0)
			return usage_err("unknown option '%s'", name);
		if (!(opt_table[found].cmds & (1u << a->cmd)))
			return usage_err("option %s is not valid for '%s'", name,
					 a->cmd_name);
		if (eq) {
			val = eq + 1;
		} else {
			if (i + 1 >= argc)
				return usage_err("option %s needs a value", name);
			val = argv[++i];
		}

		switch (opt_table[found].id) {
		case O_GROUP:
			if (set_selector(a, SEL_GROUP, name, val))
				return -1;
			break;
		case O_NOIOMMU_GROUP:
			if (set_selector(a, SEL_NOIOMMU, name, val))
				return -1;
			break;
		case O_CDEV:
			if (set_selector(a, SEL_CDEV, name, val))
				return -1;
			break;
		case O_DEVICE:
			if (a->device)
				return usage_err("--device given twice");
			if (!*val)
				return usage_err("--device: empty name");
			if (strlen(val) > 255)
				return usage_err("--device: name too long");
			a->device = val;
			break;
		case O_IOMMU:
			if (!strcmp(val, "type1v2"))
				a->iommu = IOMMU_TYPE1V2;
			else if (!strcmp(val, "type1"))
				a->iommu = IOMMU_TYPE1;
			else if (!strcmp(val, "noiommu"))
				a->iommu = IOMMU_NOIOMMU;
			else if (!strcmp(val, "none"))
				a->iommu = IOMMU_NONE;
			else
				return usage_err("--iommu: expected type1v2, type1, noiommu or none, got '%s'",
						 val);
			break;
		case O_REGION:
			if (!parse_u32(val, &a->region))
				return usage_err("--region: bad number '%s'", val);
			a->have_region = true;
			break;
		case O_OFFSET:
			if (parse_offsets(val, &a->offsets))
				return -1;
			break;
		case O_WIDTH:
			if (!parse_u32(val, &a->width) ||
			    (a->width != 1 && a->width != 2 && a->width != 4 &&
			     a->width != 8))
				return usage_err("--width: expected 1, 2, 4 or 8, got '%s'",
						 val);
			a->have_width = true;
			break;
		case O_VIA:
			if (parse_via(name, val, &a->via))
				return -1;
			a->have_via = true;
			break;
		case O_INDEX:
			if (!parse_u32(val, &a->index))
				return usage_err("--index: bad number '%s'", val);
			a->have_index = true;
			break;
		case O_TIMEOUT:
			if (!parse_u32(val, &a->timeout_ms) ||
			    a->timeout_ms > 86400000)
				return usage_err("--timeout-ms: bad number '%s' (0..86400000)",
						 val);
			a->have_timeout = true;
			break;
		case O_COUNT:
			if (!parse_u32(val, &a->count) || a->count < 1 ||
			    a->count > 100000)
				return usage_err("--count: bad number '%s' (1..100000)",
						 val);
			a->have_count = true;
			break;
		case O_SETUP:
			if (parse_ops(name, val, &a->setup))
				return -1;
			break;
		case O_ACK:
			if (parse_ops(name, val, &a->ack))
				return -1;
			break;
		case O_READY:
			if (!*val)
				return usage_err("--ready-file: empty path");
			a->ready_file = val;
			break;
		case O_OPS_VIA:
			if (parse_via(name, val, &a->ops_via))
				return -1;
			a->have_ops_via = true;
			break;
		}
	}

	if (a->sel == SEL_NONE)
		return usage_err("missing selector: one of --group N, --cdev PATH, --noiommu-group N");
	if (!a->device)
		return usage_err("missing --device NAME");
	if (a->sel == SEL_CDEV && a->iommu != IOMMU_DEFAULT)
		return usage_err("--iommu applies to --group/--noiommu-group only, not --cdev");
	if (a->iommu == IOMMU_DEFAULT && a->sel == SEL_GROUP)
		a->iommu = IOMMU_TYPE1V2;
	if (a->iommu == IOMMU_DEFAULT && a->sel == SEL_NOIOMMU)
		a->iommu = IOMMU_NOIOMMU;
	if (a->cmd == CMD_READ) {
		size_t k;

		if (!a->have_region)
			return usage_err("read: missing --region I");
		if (!a->offsets.n)
			return usage_err("read: missing --offset OFF[,OFF...]");
		for (k = 0; k < a->offsets.n; k++)
			if (a->offsets.v[k] % a->width)
				return usage_err("--offset 0x%" PRIx64
						 " is not aligned to --width %u",
						 a->offsets.v[k], a->width);
	}
	if (a->cmd == CMD_IRQ) {
		if (!a->have_index)
			return usage_err("irq: missing --index I");
		if (a->hold && (a->have_timeout || a->have_count || a->ack.n))
			return usage_err("irq --hold takes no --timeout-ms, --count or --ack: it waits for a signal");
		if (!a->have_timeout && !a->hold)
			return usage_err("irq: missing --timeout-ms T");
	}
	return 0;
}

/* ======================================================================== */
/* main                                                                     */
/* ======================================================================== */

static void write_all(int fd, const char *p, size_t n)
{
	while (n) {
		ssize_t w = write(fd, p, n);

		if (w < 0) {
			if (errno == EINTR)
				continue;
			return;
		}
		p += w;
		n -= (size_t)w;
	}
}

/* Print {"ok":..., <body>, "error":{...}} as one line on stdout. */
static void emit(bool ok)
{
	struct jbuf out = { .first = { true } };

	jclose_all();
	if (g_err.set) {
		jobj("error");
		jstr("step", g_err.step);
		jint("errno", g_err.err);
		jstr("msg", g_err.err ? strerror(g_err.err) : g_err.detail);
		jstr("detail", g_err.detail[0] ? g_err.detail : NULL);
		jclose();
	}
	jputs(&out, "{\"ok\":");
	jputs(&out, ok ? "true" : "false");
	if (J.len) {
		jputs(&out, ",");
		jraw(&out, J.p, J.len);
	}
	jputs(&out, "}\n");
	if (out.oom || J.oom) {
		static const char m[] =
			"{\"ok\":false,\"error\":{\"step\":\"json\",\"errno\":12,\"msg\":\"out of memory building JSON\",\"detail\":null}}\n";
		write_all(1, m, sizeof(m) - 1);
		return;
	}
	write_all(1, out.p, out.len);
	free(out.p);
}

static void common_header(const char *cmd, const char *path,
			  const char *device)
{
	struct utsname u;

	jstr("cmd", cmd);
	jstr("path", path);
	jstr("device", device);
	jstr("agent_version", AGENT_VERSION);
	jint("schema", JSON_SCHEMA_VERSION);
	if (uname(&u) == 0) {
		jstr("kernel", u.release);
		jstr("machine", u.machine);
	} else {
		jnull("kernel");
		jnull("machine");
	}
}

/* --dry-run: the parsed command line, for tests of the parser. */
static void jdry_run(const struct args *a)
{
	size_t k;

	jbool("dry_run", true);
	jobj("args");
	if (a->sel == SEL_CDEV) {
		jstr("cdev", a->cdev);
		jnull("group");
		jnull("iommu");
	} else {
		jnull("cdev");
		juint("group", a->group);
		jstr("iommu", iommu_names[a->iommu]);
	}
	if (a->cmd == CMD_READ) {
		juint("region", a->region);
		jarr("offsets");
		for (k = 0; k < a->offsets.n; k++)
			juint(NULL, a->offsets.v[k]);
		jclose();
		juint("width", a->width);
		jstr("via", a->via == VIA_MMAP ? "mmap" : "pread");
	}
	if (a->cmd == CMD_IRQ) {
		juint("index", a->index);
		juint("timeout_ms", a->timeout_ms);
		juint("count", a->count);
		jops("setup", &a->setup);
		jops("ack", &a->ack);
		jstr("ready_file", a->ready_file);
		jstr("ops_via", a->ops_via == VIA_MMAP ? "mmap" : "pread");
	}
	jclose();
}

int main(int argc, char **argv)
{
	struct args a;
	const struct command *cmd;
	struct session s = SESSION_INIT;
	int r;
	bool ok;

	r = parse_args(argc, argv, &a, &cmd);
	if (r > 0)
		return EXIT_OK;
	if (r < 0) {
		diag("%s", g_usage_msg);
		fputs(usage_short, stderr);
		common_header(a.cmd_name, path_names[a.sel], a.device);
		g_err.set = true;
		snprintf(g_err.step, sizeof(g_err.step), "usage");
		g_err.err = EINVAL;
		copy_str(g_err.detail, sizeof(g_err.detail), g_usage_msg);
		emit(false);
		return EXIT_USAGE;
	}

	install_signals();
	common_header(a.cmd_name, path_names[a.sel], a.device);
	if (a.dry_run) {
		jdry_run(&a);
		emit(true);
		return EXIT_OK;
	}

	r = open_device(&a, &s);
	if (r == 0)
		r = cmd->run(&a, &s);
	close_session(&s);
	ok = r == 0 && !g_err.set;
	emit(ok);
	return ok ? EXIT_OK : EXIT_FAIL;
}
