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
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include <linux/types.h>
#include <linux/vfio.h>
#if defined(__has_include)
#if __has_include(<linux/iommufd.h>)
#include <linux/iommufd.h>
#endif
#endif

#define AGENT_VERSION "1.0"
#define JSON_SCHEMA_VERSION 1

/*
 * ---- UAPI compatibility --------------------------------------------------
 * The build is meant to use 6.12 UAPI headers (HDR=...).  These fallbacks
 * (copied from the 6.12 UAPI, which is ABI-stable) only let the agent build
 * against older headers too, e.g. for the host unit test.
 */
#ifndef VFIO_DEVICE_FLAGS_CDX
#define VFIO_DEVICE_FLAGS_CDX (1 << 8)
#endif
#ifndef VFIO_DEVICE_BIND_IOMMUFD
struct vfio_device_bind_iommufd {
	__u32 argsz;
	__u32 flags;
	__s32 iommufd;
	__u32 out_devid;
};
#define VFIO_DEVICE_BIND_IOMMUFD _IO(VFIO_TYPE, VFIO_BASE + 18)
#endif
#ifndef VFIO_DEVICE_ATTACH_IOMMUFD_PT
struct vfio_device_attach_iommufd_pt {
	__u32 argsz;
	__u32 flags;
	__u32 pt_id;
};
#define VFIO_DEVICE_ATTACH_IOMMUFD_PT _IO(VFIO_TYPE, VFIO_BASE + 19)
#endif
#ifndef IOMMUFD_TYPE
#define IOMMUFD_TYPE (';')
#endif
#ifndef IOMMU_IOAS_ALLOC
struct iommu_ioas_alloc {
	__u32 size;
	__u32 flags;
	__u32 out_ioas_id;
};
#define IOMMU_IOAS_ALLOC _IO(IOMMUFD_TYPE, 0x81)
#endif
#ifndef IOMMU_IOAS_MAP
enum iommufd_ioas_map_flags {
	IOMMU_IOAS_MAP_FIXED_IOVA = 1 << 0,
	IOMMU_IOAS_MAP_WRITEABLE = 1 << 1,
	IOMMU_IOAS_MAP_READABLE = 1 << 2,
};
struct iommu_ioas_map {
	__u32 size;
	__u32 flags;
	__u32 ioas_id;
	__u32 __reserved;
	__aligned_u64 user_va;
	__aligned_u64 length;
	__aligned_u64 iova;
};
#define IOMMU_IOAS_MAP _IO(IOMMUFD_TYPE, 0x85)
#endif

/* IOVA used for the informational VFIO_IOMMU_MAP_DMA on the group path. */
#define GROUP_DMA_TEST_IOVA 0x10000000ULL

/* Exit codes. */
enum { EXIT_OK = 0, EXIT_FAIL = 1, EXIT_USAGE = 2 };

/* ======================================================================== */
/* Diagnostics                                                              */
/* ======================================================================== */

static bool g_verbose;

/* Bounded string copy that always NUL-terminates (truncates silently). */
static void copy_str(char *dst, size_t n, const char *src)
{
	size_t l = strlen(src);

	if (!n)
		return;
	if (l >= n)
		l = n - 1;
	memcpy(dst, src, l);
	dst[l] = '\0';
}

static void diag(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void diag(const char *fmt, ...)
{
	va_list ap;

	fputs("vfio-agent: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

#define trace(...)                         \
	do {                               \
		if (g_verbose)             \
			diag(__VA_ARGS__); \
	} while (0)

/* ======================================================================== */
/* JSON writer: builds the body of the top-level object in memory           */
/* ======================================================================== */

#define JMAX_DEPTH 16

struct jbuf {
	char *p;
	size_t len, cap;
	int depth;                  /* 0 = directly inside the top object */
	bool first[JMAX_DEPTH + 1]; /* no member written yet at this depth */
	char closer[JMAX_DEPTH + 1];
	bool oom;
};

static struct jbuf J = { .first = { true } };

static void jraw(struct jbuf *j, const char *s, size_t n)
{
	if (j->oom)
		return;
	if (j->len + n + 1 > j->cap) {
		size_t nc = j->cap ? j->cap : 1024;
		char *np;

		while (j->len + n + 1 > nc)
			nc *= 2;
		np = realloc(j->p, nc);
		if (!np) {
			j->oom = true;
			return;
		}
		j->p = np;
		j->cap = nc;
	}
	memcpy(j->p + j->len, s, n);
	j->len += n;
	j->p[j->len] = '\0';
}

static void jputs(struct jbuf *j, const char *s)
{
	jraw(j, s, strlen(s));
}

static void jprintf(struct jbuf *j, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static void jprintf(struct jbuf *j, const char *fmt, ...)
{
	char tmp[128];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n >= sizeof(tmp))
		n = sizeof(tmp) - 1;
	jraw(j, tmp, (size_t)n);
}

/*
 * Decode one UTF-8 sequence at s (n bytes available).  Returns its length
 * and stores the code point, or returns 0 if the bytes are not valid UTF-8
 * (overlong forms, surrogates and values above U+10FFFF are invalid).
 */
static size_t utf8_decode(const unsigned char *s, size_t n, uint32_t *cp)
{
	uint32_t c;
	size_t len, i;

	if (n == 0)
		return 0;
	if (s[0] < 0x80) {
		*cp = s[0];
		return 1;
	} else if ((s[0] & 0xe0) == 0xc0) {
		len = 2;
		c = s[0] & 0x1f;
	} else if ((s[0] & 0xf0) == 0xe0) {
		len = 3;
		c = s[0] & 0x0f;
	} else if ((s[0] & 0xf8) == 0xf0) {
		len = 4;
		c = s[0] & 0x07;
	} else {
		return 0;
	}
	if (len > n)
		return 0;
	for (i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		c = (c << 6) | (s[i] & 0x3f);
	}
	if ((len == 2 && c < 0x80) || (len == 3 && c < 0x800) ||
	    (len == 4 && c < 0x10000) || c > 0x10ffff ||
	    (c >= 0xd800 && c <= 0xdfff))
		return 0;
	*cp = c;
	return len;
}

/*
 * Append s as a JSON string literal.  The output is pure 7-bit printable
 * ASCII (safe over any serial console): control characters, DEL and every
 * non-ASCII code point are \u-escaped (surrogate pairs above U+FFFF).
 * Bytes that are not valid UTF-8 are taken as Latin-1 (\u00XX).
 */
static void jstring(struct jbuf *j, const char *str)
{
	const unsigned char *s = (const unsigned char *)str;
	size_t n = strlen(str), i = 0;

	jraw(j, "\"", 1);
	while (i < n) {
		unsigned char c = s[i];
		uint32_t cp;
		size_t l;

		if (c == '"') {
			jraw(j, "\\\"", 2);
			i++;
		} else if (c == '\\') {
			jraw(j, "\\\\", 2);
			i++;
		} else if (c == '\n') {
			jraw(j, "\\n", 2);
			i++;
		} else if (c == '\r') {
			jraw(j, "\\r", 2);
			i++;
		} else if (c == '\t') {
			jraw(j, "\\t", 2);
			i++;
		} else if (c >= 0x20 && c < 0x7f) {
			jraw(j, (const char *)&s[i], 1);
			i++;
		} else if (c < 0x80) { /* other controls and DEL */
			jprintf(j, "\\u%04x", c);
			i++;
		} else if ((l = utf8_decode(s + i, n - i, &cp)) != 0) {
			if (cp >= 0x10000) {
				cp -= 0x10000;
				jprintf(j, "\\u%04x\\u%04x",
					0xd800 + (unsigned)(cp >> 10),
					0xdc00 + (unsigned)(cp & 0x3ff));
			} else {
				jprintf(j, "\\u%04x", (unsigned)cp);
			}
			i += l;
		} else {
			jprintf(j, "\\u%04x", c);
			i++;
		}
	}
	jraw(j, "\"", 1);
}

/* Start a member (key != NULL, inside an object) or an array element. */
static void jkey(struct jbuf *j, const char *key)
{
	if (!j->first[j->depth])
		jraw(j, ",", 1);
	j->first[j->depth] = false;
	if (key) {
		jstring(j, key);
		jraw(j, ":", 1);
	}
}

static void jopen(struct jbuf *j, const char *key, char open, char close)
{
	jkey(j, key);
	jraw(j, &open, 1);
	if (j->depth < JMAX_DEPTH) {
		j->depth++;
		j->first[j->depth] = true;
		j->closer[j->depth] = close;
	} else {
		j->oom = true; /* nesting bug: refuse to emit broken JSON */
	}
}

static void jobj(const char *key) { jopen(&J, key, '{', '}'); }
static void jarr(const char *key) { jopen(&J, key, '[', ']'); }

static void jclose(void)
{
	if (J.depth > 0) {
		jraw(&J, &J.closer[J.depth], 1);
		J.depth--;
	}
}

static void jclose_all(void)
{
	while (J.depth > 0)
		jclose();
}

static void jstr(const char *key, const char *v)
{
	jkey(&J, key);
	if (v)
		jstring(&J, v);
	else
		jputs(&J, "null");
}

static void jint(const char *key, long long v)
{
	jkey(&J, key);
	jprintf(&J, "%lld", v);
}

static void juint(const char *key, unsigned long long v)
{
	jkey(&J, key);
	jprintf(&J, "%llu", v);
}

static void jbool(const char *key, bool v)
{
	jkey(&J, key);
	jputs(&J, v ? "true" : "false");
}

static void jnull(const char *key)
{
	jkey(&J, key);
	jputs(&J, "null");
}

/* Register value: "0x" + 2*width hex digits (width in bytes). */
static void jhexw(const char *key, unsigned long long v, int width)
{
	jkey(&J, key);
	jprintf(&J, "\"0x%0*llx\"", width * 2, v);
}

/* Address-like value: "0x" + minimal hex digits. */
static void jhex(const char *key, unsigned long long v)
{
	jkey(&J, key);
	jprintf(&J, "\"0x%llx\"", v);
}

static void jms(const char *key, double ms)
{
	jkey(&J, key);
	if (ms < 0)
		ms = 0;
	jprintf(&J, "%.3f", ms);
}

/* ======================================================================== */
/* Errors                                                                   */
/* ======================================================================== */

struct agent_error {
	bool set;
	char step[64];
	int err; /* errno; 0 = detected by the agent, no syscall failed */
	char detail[512];
};

static struct agent_error g_err;

static int fail(const char *step, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static int fail(const char *step, int err, const char *fmt, ...)
{
	if (g_err.set) /* keep the first (root) cause */
		return -1;
	g_err.set = true;
	snprintf(g_err.step, sizeof(g_err.step), "%s", step);
	g_err.err = err;
	g_err.detail[0] = '\0';
	if (fmt) {
		va_list ap;

		va_start(ap, fmt);
		vsnprintf(g_err.detail, sizeof(g_err.detail), fmt, ap);
		va_end(ap);
	}
	diag("error: %s: %s%s%s", g_err.step,
	     err ? strerror(err) : "(agent check)",
	     g_err.detail[0] ? ": " : "", g_err.detail);
	return -1;
}

/* ======================================================================== */
/* Number and list parsing (host unit-tested)                               */
/* ======================================================================== */

/*
 * Parse an unsigned number: "0x"/"0X" prefix = hex, otherwise decimal (a
 * leading 0 does NOT mean octal).  The whole string must be consumed.
 */
static bool parse_u64(const char *s, uint64_t *out)
{
	int base = 10;
	char *end;
	unsigned long long v;

	if (!s || !*s)
		return false;
	if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
		base = 16;
		s += 2;
	}
	if (!isxdigit((unsigned char)s[0]))
		return false; /* also rejects "", "-1", "+1", " 1" */
	errno = 0;
	v = strtoull(s, &end, base);
	if (errno || *end)
		return false;
	*out = v;
	return true;
}

static bool parse_u32(const char *s, uint32_t *out)
{
	uint64_t v;

	if (!parse_u64(s, &v) || v > UINT32_MAX)
		return false;
	*out = (uint32_t)v;
	return true;
}

/* ---- register ops ------------------------------------------------------ */

enum op_kind { OP_WRITE, OP_READ, OP_SET, OP_CLEAR, OP_DELAY };

struct reg_op {
	enum op_kind kind;
	uint32_t off; /* OP_DELAY: milliseconds */
	uint32_t val;
};

struct op_list {
	struct reg_op *v;
	size_t n, cap;
};

static char g_usage_msg[512];

static int usage_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int usage_err(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(g_usage_msg, sizeof(g_usage_msg), fmt, ap);
	va_end(ap);
	return -1;
}

static int op_push(struct op_list *l, struct reg_op op)
{
	if (l->n == l->cap) {
		size_t nc = l->cap ? 2 * l->cap : 8;
		struct reg_op *nv = realloc(l->v, nc * sizeof(*nv));

		if (!nv)
			return usage_err("out of memory");
		l->v = nv;
		l->cap = nc;
	}
	l->v[l->n++] = op;
	return 0;
}

/* Split "OFF<sep>VAL"; the first matching separator in seps[] wins. */
static bool split_off_val(char *body, const char *const *seps, char **off,
			  char **val)
{
	for (; *seps; seps++) {
		char *p = strstr(body, *seps);

		if (p) {
			*p = '\0';
			*off = body;
			*val = p + strlen(*seps);
			return true;
		}
	}
	return false;
}

/*
 * Parse one OPS string (comma-separated) and append to l.
 *   w:OFF=VAL            32-bit write
 *   r:OFF                32-bit read (value logged)
 *   s:OFF|=VAL  s:OFF=VAL      read-modify-write, set bits
 *   c:OFF&=~VAL c:OFF=VAL      read-modify-write, clear bits
 *   d:MS                 sleep MS milliseconds
 * OFF must be 4-byte aligned.  Returns 0, or -1 with g_usage_msg set.
 */
static int parse_ops(const char *opt, const char *text, struct op_list *l)
{
	static const char *const sep_w[] = { "=", NULL };
	static const char *const sep_s[] = { "|=", "=", NULL };
	static const char *const sep_c[] = { "&=~", "=", NULL };
	char *dup = strdup(text), *save = NULL, *tok;
	int ret = 0;

	if (!dup)
		return usage_err("out of memory");
	if (!*text) {
		ret = usage_err("%s: empty OPS list", opt);
		goto out;
	}
	/* strtok_r would silently merge ",,": check for empty items first. */
	if (text[0] == ',' || text[strlen(text) - 1] == ',' ||
	    strstr(text, ",,")) {
		ret = usage_err("%s: empty op in '%s'", opt, text);
		goto out;
	}
	for (tok = strtok_r(dup, ",", &save); tok;
	     tok = strtok_r(NULL, ",", &save)) {
		struct reg_op op = { 0 };
		char kind = tok[0], *body, *off = NULL, *val = NULL;
		char orig[128];

		copy_str(orig, sizeof(orig), tok);
		if (!kind || tok[1] != ':') {
			ret = usage_err("%s: bad op '%s' (expected w:OFF=VAL, r:OFF, s:OFF|=VAL, c:OFF&=~VAL or d:MS)",
					opt, orig);
			goto out;
		}
		body = tok + 2;
		switch (kind) {
		case 'w':
			op.kind = OP_WRITE;
			if (!split_off_val(body, sep_w, &off, &val))
				goto bad_form;
			break;
		case 's':
			op.kind = OP_SET;
			if (!split_off_val(body, sep_s, &off, &val))
				goto bad_form;
			break;
		case 'c':
			op.kind = OP_CLEAR;
			if (!split_off_val(body, sep_c, &off, &val))
				goto bad_form;
			break;
		case 'r':
			op.kind = OP_READ;
			off = body;
			break;
		case 'd':
			op.kind = OP_DELAY;
			if (!parse_u32(body, &op.off) || op.off > 600000) {
				ret = usage_err("%s: bad delay in '%s' (milliseconds, at most 600000)",
						opt, orig);
				goto out;
			}
			break;
		default:
			ret = usage_err("%s: unknown op kind '%c' in '%s' (expected w, r, s, c or d)",
					opt, kind, orig);
			goto out;
		}
		if (op.kind != OP_DELAY) {
			if (!parse_u32(off, &op.off)) {
				ret = usage_err("%s: bad offset in '%s'", opt, orig);
				goto out;
			}
			if (op.off % 4) {
				ret = usage_err("%s: offset in '%s' is not 4-byte aligned",
						opt, orig);
				goto out;
			}
			if (val && !parse_u32(val, &op.val)) {
				ret = usage_err("%s: bad value in '%s' (32-bit number expected)",
						opt, orig);
				goto out;
			}
		}
		if (op_push(l, op)) {
			ret = -1;
			goto out;
		}
		continue;
bad_form:
		ret = usage_err("%s: bad op '%s' (expected %s)", opt, orig,
				kind == 'w' ? "w:OFF=VAL" :
				kind == 's' ? "s:OFF|=VAL or s:OFF=VAL" :
					      "c:OFF&=~VAL or c:OFF=VAL");
		goto out;
	}
out:
	free(dup);
	return ret;
}

/* Comma-separated offsets for `read`. */
struct u64_list {
	uint64_t *v;
	size_t n, cap;
};

static int parse_offsets(const char *text, struct u64_list *l)
{
	char *dup, *save = NULL, *tok;
	int ret = 0;

	if (!*text || text[0] == ',' || text[strlen(text) - 1] == ',' ||
	    strstr(text, ",,"))
		return usage_err("--offset: empty item in '%s'", text);
	dup = strdup(text);
	if (!dup)
		return usage_err("out of memory");
	for (tok = strtok_r(dup, ",", &save); tok;
	     tok = strtok_r(NULL, ",", &save)) {
		uint64_t v;

		if (!parse_u64(tok, &v)) {
			ret = usage_err("--offset: bad number '%s'", tok);
			break;
		}
		if (l->n == l->cap) {
			size_t nc = l->cap ? 2 * l->cap : 8;
			uint64_t *nv = realloc(l->v, nc * sizeof(*nv));

			if (!nv) {
				ret = usage_err("out of memory");
				break;
			}
			l->v = nv;
			l->cap = nc;
		}
		l->v[l->n++] = v;
	}
	free(dup);
	return ret;
}

/* ======================================================================== */
/* Command line                                                             */
/* ======================================================================== */

enum cmd { CMD_NONE, CMD_INFO, CMD_READ, CMD_IRQ };
enum sel { SEL_NONE, SEL_GROUP, SEL_CDEV, SEL_NOIOMMU };
enum iommu_kind { IOMMU_DEFAULT, IOMMU_TYPE1, IOMMU_TYPE1V2, IOMMU_NOIOMMU,
		  IOMMU_NONE };
enum via { VIA_MMAP, VIA_PREAD };

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
	bool dry_run;
};

static const char *const path_names[] = {
	[SEL_NONE] = NULL,
	[SEL_GROUP] = "group",
	[SEL_CDEV] = "cdev",
	[SEL_NOIOMMU] = "noiommu",
};

static const char *const iommu_names[] = {
	[IOMMU_DEFAULT] = "default",
	[IOMMU_TYPE1] = "type1",
	[IOMMU_TYPE1V2] = "type1v2",
	[IOMMU_NOIOMMU] = "noiommu",
	[IOMMU_NONE] = "none",
};

static const char usage_text[] =
	"usage:\n"
	"  vfio-agent info SELECTOR --device NAME [--iommu KIND]\n"
	"  vfio-agent read SELECTOR --device NAME --region I --offset OFF[,OFF...]\n"
	"                  [--width 1|2|4|8] [--via mmap|pread] [--iommu KIND]\n"
	"  vfio-agent irq  SELECTOR --device NAME --index I --timeout-ms T [--count K]\n"
	"                  [--setup OPS] [--ack OPS] [--ready-file PATH]\n"
	"                  [--ops-via mmap|pread] [--iommu KIND]\n"
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

/* Returns 0 ok, -1 usage error (g_usage_msg), 1 help/version printed. */
static int parse_args(int argc, char **argv, struct args *a)
{
	int i;

	memset(a, 0, sizeof(*a));
	a->width = 4;
	a->count = 1;

	if (argc < 2)
		return usage_err("missing command (info, read or irq)");
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") ||
	    !strcmp(argv[1], "help")) {
		fputs(usage_text, stdout);
		return 1;
	}
	if (!strcmp(argv[1], "--version")) {
		printf("vfio-agent %s (json schema %d)\n", AGENT_VERSION,
		       JSON_SCHEMA_VERSION);
		return 1;
	}
	a->cmd_name = argv[1];
	if (!strcmp(argv[1], "info"))
		a->cmd = CMD_INFO;
	else if (!strcmp(argv[1], "read"))
		a->cmd = CMD_READ;
	else if (!strcmp(argv[1], "irq"))
		a->cmd = CMD_IRQ;
	else {
		a->cmd_name = NULL;
		return usage_err("unknown command '%s' (expected info, read or irq)",
				 argv[1]);
	}

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
		if (!strcmp(arg, "--help") || !strcmp(arg, "-h")) {
			fputs(usage_text, stdout);
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
		if (!a->have_timeout)
			return usage_err("irq: missing --timeout-ms T");
	}
	return 0;
}

/* ======================================================================== */
/* Small helpers                                                            */
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

static int xopen(const char *path, int flags)
{
	int fd;

	trace("open %s", path);
	fd = open(path, flags | O_CLOEXEC);
	if (fd < 0)
		fail("open", errno, "%s", path);
	return fd;
}

static int xioctl(int fd, unsigned long req, void *arg, const char *step)
{
	int r;

	trace("%s", step);
	do {
		r = ioctl(fd, req, arg);
	} while (r < 0 && errno == EINTR);
	if (r < 0)
		return fail(step, errno, NULL);
	return r;
}

static volatile sig_atomic_t g_signal;

static void on_term(int sig)
{
	g_signal = sig;
}

/* SIGBUS/SIGSEGV while touching an mmap'ed register: report, don't die. */
static sigjmp_buf g_fault_jmp;
static volatile sig_atomic_t g_fault_armed;
static volatile sig_atomic_t g_fault_sig;

static void on_fault(int sig)
{
	if (g_fault_armed) {
		g_fault_sig = sig;
		siglongjmp(g_fault_jmp, 1);
	}
	signal(sig, SIG_DFL);
	raise(sig);
}

static void install_signals(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_term; /* no SA_RESTART: interrupt poll() */
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_fault;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGBUS, &sa, NULL);
	sigaction(SIGSEGV, &sa, NULL);
}

/* ======================================================================== */
/* Flag decoding                                                            */
/* ======================================================================== */

struct flag_name {
	uint32_t bit;
	const char *name;
};

static const struct flag_name device_flag_names[] = {
	{ VFIO_DEVICE_FLAGS_RESET, "reset" },
	{ VFIO_DEVICE_FLAGS_PCI, "pci" },
	{ VFIO_DEVICE_FLAGS_PLATFORM, "platform" },
	{ VFIO_DEVICE_FLAGS_AMBA, "amba" },
	{ VFIO_DEVICE_FLAGS_CCW, "ccw" },
	{ VFIO_DEVICE_FLAGS_AP, "ap" },
	{ VFIO_DEVICE_FLAGS_FSL_MC, "fsl_mc" },
	{ VFIO_DEVICE_FLAGS_CAPS, "caps" },
	{ VFIO_DEVICE_FLAGS_CDX, "cdx" },
	{ 0, NULL },
};

static const struct flag_name region_flag_names[] = {
	{ VFIO_REGION_INFO_FLAG_READ, "read" },
	{ VFIO_REGION_INFO_FLAG_WRITE, "write" },
	{ VFIO_REGION_INFO_FLAG_MMAP, "mmap" },
	{ VFIO_REGION_INFO_FLAG_CAPS, "caps" },
	{ 0, NULL },
};

static const struct flag_name irq_flag_names[] = {
	{ VFIO_IRQ_INFO_EVENTFD, "eventfd" },
	{ VFIO_IRQ_INFO_MASKABLE, "maskable" },
	{ VFIO_IRQ_INFO_AUTOMASKED, "automasked" },
	{ VFIO_IRQ_INFO_NORESIZE, "noresize" },
	{ 0, NULL },
};

static const struct flag_name group_flag_names[] = {
	{ VFIO_GROUP_FLAGS_VIABLE, "viable" },
	{ VFIO_GROUP_FLAGS_CONTAINER_SET, "container_set" },
	{ 0, NULL },
};

/* "flags": raw number, "flag_names": [known names..., "bitN" for unknown] */
static void jflags(uint32_t flags, const struct flag_name *names)
{
	uint32_t known = 0;
	int b;

	juint("flags", flags);
	jarr("flag_names");
	for (; names->name; names++) {
		known |= names->bit;
		if (flags & names->bit)
			jstr(NULL, names->name);
	}
	for (b = 0; b < 32; b++) {
		if ((flags & ~known) & (1u << b)) {
			char tmp[16];

			snprintf(tmp, sizeof(tmp), "bit%d", b);
			jstr(NULL, tmp);
		}
	}
	jclose();
}

/* ======================================================================== */
/* Opening the device: group / noiommu / cdev                               */
/* ======================================================================== */

struct session {
	int group_fd, container_fd, iommufd, device_fd;
	uint32_t ioas_id;
	void *dma_buf;
	size_t dma_len;
};

static size_t page_size(void)
{
	long p = sysconf(_SC_PAGESIZE);

	return p > 0 ? (size_t)p : 4096;
}

static void *anon_buffer(size_t len)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED)
		return NULL;
	memset(p, 0x5a, len); /* fault the pages in */
	return p;
}

/* Informational result object: {"ok":false,"errno":..,"msg":..} */
static void jerrno_obj(int err)
{
	jbool("ok", false);
	jint("errno", err);
	jstr("msg", strerror(err));
}

static int open_group_path(const struct args *a, struct session *s)
{
	struct vfio_group_status st = { .argsz = sizeof(st) };
	char path[64];
	uint32_t flags_before;
	int api, r;
	int iommu_type = 0;

	if (a->sel == SEL_NOIOMMU)
		snprintf(path, sizeof(path), "/dev/vfio/noiommu-%u", a->group);
	else
		snprintf(path, sizeof(path), "/dev/vfio/%u", a->group);

	jobj("group");
	juint("number", a->group);
	jstr("dev", path);
	jstr("iommu", iommu_names[a->iommu]);

	s->group_fd = xopen(path, O_RDWR);
	if (s->group_fd < 0)
		return -1;
	if (xioctl(s->group_fd, VFIO_GROUP_GET_STATUS, &st,
		   "VFIO_GROUP_GET_STATUS") < 0)
		return -1;
	flags_before = st.flags;
	juint("flags_before", flags_before);
	if (!(st.flags & VFIO_GROUP_FLAGS_VIABLE)) {
		jflags(st.flags, group_flag_names);
		return fail("VFIO_GROUP_FLAGS_VIABLE", 0,
			    "group %u is not viable (flags 0x%x): not all devices in the group are bound to vfio",
			    a->group, st.flags);
	}

	s->container_fd = xopen("/dev/vfio/vfio", O_RDWR);
	if (s->container_fd < 0)
		return -1;
	trace("VFIO_GET_API_VERSION");
	api = ioctl(s->container_fd, VFIO_GET_API_VERSION);
	if (api < 0)
		return fail("VFIO_GET_API_VERSION", errno, NULL);
	jint("api_version", api);
	if (api != VFIO_API_VERSION)
		return fail("VFIO_GET_API_VERSION", 0,
			    "kernel VFIO API version %d, agent built for %d",
			    api, VFIO_API_VERSION);

	/* Which IOMMU backends the container offers (before SET_CONTAINER). */
	jobj("extensions");
	{
		static const struct {
			const char *name;
			int ext;
		} exts[] = {
			{ "type1", VFIO_TYPE1_IOMMU },
			{ "type1v2", VFIO_TYPE1v2_IOMMU },
			{ "noiommu", VFIO_NOIOMMU_IOMMU },
		};
		size_t k;

		for (k = 0; k < sizeof(exts) / sizeof(exts[0]); k++) {
			r = ioctl(s->container_fd, VFIO_CHECK_EXTENSION,
				  exts[k].ext);
			jbool(exts[k].name, r > 0);
		}
	}
	jclose();

	if (xioctl(s->group_fd, VFIO_GROUP_SET_CONTAINER, &s->container_fd,
		   "VFIO_GROUP_SET_CONTAINER") < 0)
		return -1;

	switch (a->iommu) {
	case IOMMU_TYPE1:
		iommu_type = VFIO_TYPE1_IOMMU;
		break;
	case IOMMU_TYPE1V2:
		iommu_type = VFIO_TYPE1v2_IOMMU;
		break;
	case IOMMU_NOIOMMU:
		iommu_type = VFIO_NOIOMMU_IOMMU;
		break;
	default:
		break; /* IOMMU_NONE: deliberately no VFIO_SET_IOMMU */
	}
	if (iommu_type) {
		trace("VFIO_SET_IOMMU %d", iommu_type);
		r = ioctl(s->container_fd, VFIO_SET_IOMMU, iommu_type);
		if (r < 0)
			return fail("VFIO_SET_IOMMU", errno, "%s",
				    iommu_names[a->iommu]);
	}

	memset(&st, 0, sizeof(st));
	st.argsz = sizeof(st);
	if (xioctl(s->group_fd, VFIO_GROUP_GET_STATUS, &st,
		   "VFIO_GROUP_GET_STATUS") < 0)
		return -1;
	jflags(st.flags, group_flag_names);

	/* Informational: can the container map DMA (type1 only)? */
	if (a->iommu == IOMMU_TYPE1 || a->iommu == IOMMU_TYPE1V2) {
		struct vfio_iommu_type1_dma_map map = {
			.argsz = sizeof(map),
			.flags = VFIO_DMA_MAP_FLAG_READ |
				 VFIO_DMA_MAP_FLAG_WRITE,
		};

		s->dma_len = page_size();
		s->dma_buf = anon_buffer(s->dma_len);
		jobj("dma_map");
		if (!s->dma_buf) {
			jerrno_obj(errno);
		} else {
			map.vaddr = (uintptr_t)s->dma_buf;
			map.iova = GROUP_DMA_TEST_IOVA;
			map.size = s->dma_len;
			trace("VFIO_IOMMU_MAP_DMA");
			if (ioctl(s->container_fd, VFIO_IOMMU_MAP_DMA, &map) < 0) {
				jerrno_obj(errno);
			} else {
				jbool("ok", true);
				jhex("iova", map.iova);
				juint("length", map.size);
			}
		}
		jclose();
	}

	trace("VFIO_GROUP_GET_DEVICE_FD %s", a->device);
	s->device_fd = ioctl(s->group_fd, VFIO_GROUP_GET_DEVICE_FD, a->device);
	if (s->device_fd < 0)
		return fail("VFIO_GROUP_GET_DEVICE_FD", errno, "%s", a->device);
	jclose(); /* group */
	return 0;
}

/* Name of the device behind /dev/vfio/devices/vfioX, from sysfs. */
static bool cdev_sysfs_device(const char *cdev, char *out, size_t outlen)
{
	const char *base = strrchr(cdev, '/');
	char link[PATH_MAX], target[PATH_MAX];
	ssize_t n;
	const char *name;

	base = base ? base + 1 : cdev;
	snprintf(link, sizeof(link), "/sys/class/vfio-dev/%s/device", base);
	n = readlink(link, target, sizeof(target) - 1);
	if (n <= 0)
		return false;
	target[n] = '\0';
	name = strrchr(target, '/');
	copy_str(out, outlen, name ? name + 1 : target);
	return true;
}

static int open_cdev_path(const struct args *a, struct session *s)
{
	struct iommu_ioas_alloc alloc = { .size = sizeof(alloc) };
	struct vfio_device_bind_iommufd bind = { .argsz = sizeof(bind) };
	struct vfio_device_attach_iommufd_pt attach = { .argsz = sizeof(attach) };
	char sysdev[256];

	jobj("cdev");
	jstr("dev", a->cdev);
	jstr("iommufd_dev", "/dev/iommu");
	if (cdev_sysfs_device(a->cdev, sysdev, sizeof(sysdev))) {
		jstr("sysfs_device", sysdev);
		if (strcmp(sysdev, a->device))
			return fail("cdev_device", 0,
				    "%s belongs to %s, not to --device %s",
				    a->cdev, sysdev, a->device);
	} else {
		jnull("sysfs_device");
	}

	s->iommufd = xopen("/dev/iommu", O_RDWR);
	if (s->iommufd < 0)
		return -1;
	if (xioctl(s->iommufd, IOMMU_IOAS_ALLOC, &alloc, "IOMMU_IOAS_ALLOC") < 0)
		return -1;
	s->ioas_id = alloc.out_ioas_id;
	juint("ioas_id", alloc.out_ioas_id);

	s->device_fd = xopen(a->cdev, O_RDWR);
	if (s->device_fd < 0)
		return -1;
	bind.iommufd = s->iommufd;
	if (xioctl(s->device_fd, VFIO_DEVICE_BIND_IOMMUFD, &bind,
		   "VFIO_DEVICE_BIND_IOMMUFD") < 0)
		return -1;
	juint("devid", bind.out_devid);
	attach.pt_id = s->ioas_id;
	if (xioctl(s->device_fd, VFIO_DEVICE_ATTACH_IOMMUFD_PT, &attach,
		   "VFIO_DEVICE_ATTACH_IOMMUFD_PT") < 0)
		return -1;
	juint("pt_id", attach.pt_id);

	/* Informational: map a small anonymous buffer into the IOAS. */
	jobj("ioas_map");
	s->dma_len = page_size();
	s->dma_buf = anon_buffer(s->dma_len);
	if (!s->dma_buf) {
		jerrno_obj(errno);
	} else {
		struct iommu_ioas_map map = {
			.size = sizeof(map),
			.flags = IOMMU_IOAS_MAP_READABLE |
				 IOMMU_IOAS_MAP_WRITEABLE,
			.ioas_id = s->ioas_id,
			.user_va = (uintptr_t)s->dma_buf,
			.length = s->dma_len,
		};

		trace("IOMMU_IOAS_MAP");
		if (ioctl(s->iommufd, IOMMU_IOAS_MAP, &map) < 0) {
			jerrno_obj(errno);
		} else {
			jbool("ok", true);
			jhex("iova", map.iova);
			juint("length", map.length);
		}
	}
	jclose(); /* ioas_map */
	jclose(); /* cdev */
	return 0;
}

static int open_device(const struct args *a, struct session *s)
{
	if (a->sel == SEL_CDEV)
		return open_cdev_path(a, s);
	return open_group_path(a, s);
}

static void close_session(struct session *s)
{
	/* Device first, then group/container/iommufd (kernel order). */
	if (s->device_fd >= 0)
		close(s->device_fd);
	if (s->group_fd >= 0)
		close(s->group_fd);
	if (s->container_fd >= 0)
		close(s->container_fd);
	if (s->iommufd >= 0)
		close(s->iommufd);
	if (s->dma_buf)
		munmap(s->dma_buf, s->dma_len);
}

/* ======================================================================== */
/* Device info, regions                                                     */
/* ======================================================================== */

static int get_device_info(int fd, struct vfio_device_info *di)
{
	memset(di, 0, sizeof(*di));
	di->argsz = sizeof(*di);
	return xioctl(fd, VFIO_DEVICE_GET_INFO, di, "VFIO_DEVICE_GET_INFO");
}

static void jdevice_info(const struct vfio_device_info *di)
{
	jobj("device_info");
	jflags(di->flags, device_flag_names);
	juint("num_regions", di->num_regions);
	juint("num_irqs", di->num_irqs);
	jclose();
}

static int get_region_info(int fd, uint32_t index, struct vfio_region_info *ri)
{
	memset(ri, 0, sizeof(*ri));
	ri->argsz = sizeof(*ri);
	ri->index = index;
	return xioctl(fd, VFIO_DEVICE_GET_REGION_INFO, ri,
		      "VFIO_DEVICE_GET_REGION_INFO");
}

static void jregion_members(const struct vfio_region_info *ri)
{
	juint("index", ri->index);
	juint("size", ri->size);
	juint("offset", ri->offset);
	jflags(ri->flags, region_flag_names);
}

static int get_irq_info(int fd, uint32_t index, struct vfio_irq_info *ii)
{
	memset(ii, 0, sizeof(*ii));
	ii->argsz = sizeof(*ii);
	ii->index = index;
	return xioctl(fd, VFIO_DEVICE_GET_IRQ_INFO, ii,
		      "VFIO_DEVICE_GET_IRQ_INFO");
}

static void jirq_members(const struct vfio_irq_info *ii)
{
	juint("index", ii->index);
	juint("count", ii->count);
	jflags(ii->flags, irq_flag_names);
}

/* A device region opened for register access by mmap or pread/pwrite. */
struct region {
	int fd;
	struct vfio_region_info ri;
	enum via via;
	volatile uint8_t *map;
	size_t maplen;
};

static int region_open(int fd, uint32_t index, enum via via, struct region *r)
{
	memset(r, 0, sizeof(*r));
	r->fd = fd;
	r->via = via;
	if (get_region_info(fd, index, &r->ri) < 0) {
		r->ri.argsz = 0; /* nothing valid to report */
		return -1;
	}
	if (via == VIA_MMAP) {
		size_t ps = page_size();
		void *p;

		if (!(r->ri.flags & VFIO_REGION_INFO_FLAG_MMAP))
			return fail("mmap", 0,
				    "region %u does not support mmap (flags 0x%x); try pread",
				    index, r->ri.flags);
		r->maplen = (r->ri.size + ps - 1) & ~(ps - 1);
		trace("mmap region %u len 0x%zx offset 0x%llx", index,
		      r->maplen, (unsigned long long)r->ri.offset);
		p = mmap(NULL, r->maplen, PROT_READ | PROT_WRITE, MAP_SHARED,
			 fd, (off_t)r->ri.offset);
		if (p == MAP_FAILED) {
			r->maplen = 0;
			return fail("mmap", errno, "region %u", index);
		}
		r->map = p;
	} else {
		if (!(r->ri.flags & VFIO_REGION_INFO_FLAG_READ))
			return fail("pread", 0, "region %u is not readable",
				    index);
	}
	return 0;
}

static void region_close(struct region *r)
{
	if (r->map)
		munmap((void *)r->map, r->maplen);
	r->map = NULL;
}

static int region_check(const struct region *r, uint64_t off, uint32_t width,
			const char *step)
{
	if (off > r->ri.size || r->ri.size - off < width)
		return fail(step, 0,
			    "offset 0x%" PRIx64 " + %u is outside region %u (size 0x%llx)",
			    off, width, r->ri.index,
			    (unsigned long long)r->ri.size);
	return 0;
}

static int region_read(struct region *r, uint64_t off, uint32_t width,
		       uint64_t *val)
{
	if (region_check(r, off, width, r->via == VIA_MMAP ? "mmap_read" : "pread"))
		return -1;
	if (r->via == VIA_MMAP) {
		volatile uint8_t *p = r->map + off;

		g_fault_sig = 0;
		if (sigsetjmp(g_fault_jmp, 1)) {
			g_fault_armed = 0;
			return fail("mmap_read", 0,
				    "signal %d reading offset 0x%" PRIx64,
				    (int)g_fault_sig, off);
		}
		g_fault_armed = 1;
		switch (width) {
		case 1: *val = *(volatile uint8_t *)p; break;
		case 2: *val = *(volatile uint16_t *)p; break;
		case 4: *val = *(volatile uint32_t *)p; break;
		default: *val = *(volatile uint64_t *)p; break;
		}
		g_fault_armed = 0;
	} else {
		uint64_t v = 0;
		ssize_t n;

		switch (width) {
		case 1: { uint8_t b; n = pread(r->fd, &b, 1, (off_t)(r->ri.offset + off)); v = b; break; }
		case 2: { uint16_t b; n = pread(r->fd, &b, 2, (off_t)(r->ri.offset + off)); v = b; break; }
		case 4: { uint32_t b; n = pread(r->fd, &b, 4, (off_t)(r->ri.offset + off)); v = b; break; }
		default: { uint64_t b; n = pread(r->fd, &b, 8, (off_t)(r->ri.offset + off)); v = b; break; }
		}
		if (n < 0)
			return fail("pread", errno, "offset 0x%" PRIx64, off);
		if ((size_t)n != width)
			return fail("pread", 0, "short read (%zd of %u bytes) at offset 0x%" PRIx64,
				    n, width, off);
		*val = v;
	}
	return 0;
}

static int region_write32(struct region *r, uint64_t off, uint32_t val)
{
	if (region_check(r, off, 4, r->via == VIA_MMAP ? "mmap_write" : "pwrite"))
		return -1;
	if (r->via == VIA_MMAP) {
		g_fault_sig = 0;
		if (sigsetjmp(g_fault_jmp, 1)) {
			g_fault_armed = 0;
			return fail("mmap_write", 0,
				    "signal %d writing offset 0x%" PRIx64,
				    (int)g_fault_sig, off);
		}
		g_fault_armed = 1;
		*(volatile uint32_t *)(r->map + off) = val;
		g_fault_armed = 0;
	} else {
		ssize_t n = pwrite(r->fd, &val, 4, (off_t)(r->ri.offset + off));

		if (n < 0)
			return fail("pwrite", errno, "offset 0x%" PRIx64, off);
		if (n != 4)
			return fail("pwrite", 0, "short write (%zd of 4 bytes) at offset 0x%" PRIx64,
				    n, off);
	}
	return 0;
}

/* ======================================================================== */
/* Register ops                                                             */
/* ======================================================================== */

static const char *const op_letters[] = {
	[OP_WRITE] = "w", [OP_READ] = "r", [OP_SET] = "s", [OP_CLEAR] = "c",
	[OP_DELAY] = "d",
};

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

static int cmd_info(const struct args *a, struct session *s)
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

static int cmd_read(const struct args *a, struct session *s)
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

static int set_irqs(int fd, uint32_t flags, uint32_t index, uint32_t count,
		    const int32_t *efd, const char *step)
{
	union {
		struct vfio_irq_set s;
		uint8_t raw[sizeof(struct vfio_irq_set) + sizeof(int32_t)];
	} u;

	memset(&u, 0, sizeof(u));
	u.s.argsz = sizeof(struct vfio_irq_set) + (efd ? sizeof(int32_t) : 0);
	u.s.flags = flags;
	u.s.index = index;
	u.s.start = 0;
	u.s.count = count;
	if (efd)
		memcpy(u.s.data, efd, sizeof(*efd));
	return xioctl(fd, VFIO_DEVICE_SET_IRQS, &u.s, step);
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

static int cmd_irq(const struct args *a, struct session *s)
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

static void jops(const char *key, const struct op_list *l)
{
	size_t k;

	jarr(key);
	for (k = 0; k < l->n; k++) {
		const struct reg_op *op = &l->v[k];

		jobj(NULL);
		jstr("op", op_letters[op->kind]);
		if (op->kind == OP_DELAY) {
			juint("ms", op->off);
		} else {
			juint("offset", op->off);
			if (op->kind == OP_WRITE)
				jhexw("value", op->val, 4);
			else if (op->kind != OP_READ)
				jhexw("mask", op->val, 4);
		}
		jclose();
	}
	jclose();
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
	struct session s = { -1, -1, -1, -1, 0, NULL, 0 };
	int r;
	bool ok;

	r = parse_args(argc, argv, &a);
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
	if (r == 0) {
		switch (a.cmd) {
		case CMD_INFO:
			r = cmd_info(&a, &s);
			break;
		case CMD_READ:
			r = cmd_read(&a, &s);
			break;
		case CMD_IRQ:
			r = cmd_irq(&a, &s);
			break;
		default:
			r = fail("internal", 0, "no command");
			break;
		}
	}
	close_session(&s);
	ok = r == 0 && !g_err.set;
	emit(ok);
	return ok ? EXIT_OK : EXIT_FAIL;
}
