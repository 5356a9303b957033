// SPDX-License-Identifier: MIT
/*
 * Unit tests of vfio-agent's parsers (ops.c) and JSON writer (json.c), on the
 * host, no VFIO.  Self-contained: no test framework.
 *
 *   make -C agent test      (builds $(OUT)/test_parsers and runs it first)
 *
 * Every check compares exact values (numbers, the usage message, the JSON
 * text).  Prints "ok   NAME" or "FAIL NAME" with each failed check, then
 * "N passed, N failed"; exit status 1 if any test failed.
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent.h"
#include "json.h"
#include "ops.h"

/* ---- the runner ---------------------------------------------------------- */

static int g_test_failed; /* checks failed in the current test */

static void check_fail(const char *file, int line, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void check_fail(const char *file, int line, const char *fmt, ...)
{
	va_list ap;

	printf("    %s:%d: ", file, line);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
	g_test_failed++;
}

#define CHECK(cond)                                                  \
	do {                                                         \
		if (!(cond))                                         \
			check_fail(__FILE__, __LINE__, "%s", #cond); \
	} while (0)

#define CHECK_STR(got, want)                                                  \
	do {                                                                  \
		const char *g_ = (got), *w_ = (want);                         \
		if (!g_ || strcmp(g_, w_))                                    \
			check_fail(__FILE__, __LINE__,                        \
				   "%s\n      got:  %s%s%s\n      want: \"%s\"", \
				   #got, g_ ? "\"" : "", g_ ? g_ : "(null)",  \
				   g_ ? "\"" : "", w_);                       \
	} while (0)

#define CHECK_U64(got, want)                                                   \
	do {                                                                   \
		uint64_t g_ = (got), w_ = (want);                              \
		if (g_ != w_)                                                  \
			check_fail(__FILE__, __LINE__,                         \
				   "%s: got %" PRIu64 " (0x%" PRIx64 "), want %" \
				   PRIu64 " (0x%" PRIx64 ")",                  \
				   #got, g_, g_, w_, w_);                      \
	} while (0)

static int g_passed, g_failed;

static void run(const char *name, void (*fn)(void))
{
	g_test_failed = 0;
	fn();
	if (g_test_failed) {
		g_failed++;
		printf("FAIL %s (%d check%s)\n", name, g_test_failed,
		       g_test_failed == 1 ? "" : "s");
	} else {
		g_passed++;
		printf("ok   %s\n", name);
	}
}

#define RUN(fn) run(#fn, fn)

/* ---- helpers -------------------------------------------------------------- */

#define SENTINEL64 0x5a5a5a5a5a5a5a5aULL
#define SENTINEL32 0x5a5a5a5aU

/* parse_u64(s) must succeed with want. */
#define U64_OK(s, want)                                      \
	do {                                                 \
		uint64_t v_ = SENTINEL64;                    \
		CHECK(parse_u64((s), &v_));                  \
		CHECK_U64(v_, (want));                       \
	} while (0)

/* parse_u64(s) must fail and leave *out alone. */
#define U64_BAD(s)                                           \
	do {                                                 \
		uint64_t v_ = SENTINEL64;                    \
		CHECK(!parse_u64((s), &v_));                 \
		CHECK_U64(v_, SENTINEL64);                   \
	} while (0)

#define U32_OK(s, want)                                      \
	do {                                                 \
		uint32_t v_ = SENTINEL32;                    \
		CHECK(parse_u32((s), &v_));                  \
		CHECK_U64(v_, (want));                       \
	} while (0)

#define U32_BAD(s)                                           \
	do {                                                 \
		uint32_t v_ = SENTINEL32;                    \
		CHECK(!parse_u32((s), &v_));                 \
		CHECK_U64(v_, SENTINEL32);                   \
	} while (0)

/* An op list as text: "w:68=2047 r:0 d:10" (decimal offset/value/ms). */
static const char *ops_text(const struct op_list *l)
{
	static char buf[4096];
	size_t k, n = 0;

	buf[0] = '\0';
	for (k = 0; k < l->n && n < sizeof(buf); k++) {
		const struct reg_op *op = &l->v[k];
		const char *sp = k ? " " : "";

		if (op->kind == OP_READ || op->kind == OP_DELAY)
			n += (size_t)snprintf(buf + n, sizeof(buf) - n,
					      "%s%s:%" PRIu32 "%s", sp,
					      op_letters[op->kind], op->off,
					      op->val ? "=?" : "");
		else
			n += (size_t)snprintf(buf + n, sizeof(buf) - n,
					      "%s%s:%" PRIu32 "=%" PRIu32, sp,
					      op_letters[op->kind], op->off,
					      op->val);
	}
	return buf;
}

static void ops_free(struct op_list *l)
{
	free(l->v);
	memset(l, 0, sizeof(*l));
}

/* parse_ops(opt, text) into a fresh list must succeed giving want. */
#define OPS_OK(text, want)                                       \
	do {                                                     \
		struct op_list l_ = { 0 };                       \
		g_usage_msg[0] = '\0';                           \
		CHECK(parse_ops("--setup", (text), &l_) == 0);   \
		CHECK_STR(ops_text(&l_), (want));                \
		CHECK_STR(g_usage_msg, "");                      \
		ops_free(&l_);                                   \
	} while (0)

/* parse_ops(opt, text) must fail with exactly the usage message msg. */
#define OPS_BAD(opt, text, msg)                                  \
	do {                                                     \
		struct op_list l_ = { 0 };                       \
		g_usage_msg[0] = '\0';                           \
		CHECK(parse_ops((opt), (text), &l_) == -1);      \
		CHECK_STR(g_usage_msg, (msg));                   \
		ops_free(&l_);                                   \
	} while (0)

static const char *offsets_text(const struct u64_list *l)
{
	static char buf[4096];
	size_t k, n = 0;

	buf[0] = '\0';
	for (k = 0; k < l->n && n < sizeof(buf); k++)
		n += (size_t)snprintf(buf + n, sizeof(buf) - n, "%s%" PRIu64,
				      k ? " " : "", l->v[k]);
	return buf;
}

#define OFFSETS_BAD(text, msg)                                   \
	do {                                                     \
		struct u64_list l_ = { 0 };                      \
		g_usage_msg[0] = '\0';                           \
		CHECK(parse_offsets((text), &l_) == -1);         \
		CHECK_STR(g_usage_msg, (msg));                   \
		free(l_.v);                                      \
	} while (0)

/* jstring(s) on a fresh buffer, as a string (caller frees). */
static char *esc(const char *s)
{
	struct jbuf b = JBUF_INIT;

	jstring(&b, s);
	CHECK(!b.oom);
	return b.p;
}

#define ESC(s, want)                       \
	do {                               \
		char *e_ = esc(s);         \
		CHECK_STR(e_, (want));     \
		free(e_);                  \
	} while (0)

/* Empty the global JSON body J. */
static void jreset(void)
{
	free(J.p);
	J = (struct jbuf)JBUF_INIT;
}

/* ---- parse_u64 / parse_u32 ----------------------------------------------- */

static void test_parse_u64_decimal(void)
{
	U64_OK("0", 0);
	U64_OK("7", 7);
	U64_OK("1000", 1000);
	U64_OK("010", 10); /* a leading 0 is not octal */
	U64_OK("00", 0);
	U64_OK("4294967296", 4294967296ULL);
	U64_OK("18446744073709551615", UINT64_MAX);
}

static void test_parse_u64_hex(void)
{
	U64_OK("0x0", 0);
	U64_OK("0x10", 16);
	U64_OK("0X10", 16);
	U64_OK("0xfe0", 0xfe0);
	U64_OK("0XFEC", 0xfec);
	U64_OK("0xDeadBeef", 0xdeadbeefULL);
	U64_OK("0x00000011", 0x11);
	U64_OK("0xffffffffffffffff", UINT64_MAX);
	/*
	 * Current behaviour, pinned: after the agent strips "0x", strtoull in
	 * base 16 accepts a second "0x" of its own.  README does not promise it.
	 */
	U64_OK("0x0x10", 16);
}

static void test_parse_u64_overflow(void)
{
	U64_BAD("18446744073709551616");
	U64_BAD("99999999999999999999999");
	U64_BAD("0x10000000000000000");
	U64_BAD("0x1ffffffffffffffff");
}

static void test_parse_u64_junk(void)
{
	U64_BAD("x3");
	U64_BAD("-1");
	U64_BAD("+1");
	U64_BAD(" 1");
	U64_BAD("1 ");
	U64_BAD("12a");
	U64_BAD("a1"); /* a hex digit, but the number is decimal */
	U64_BAD("0xfz");
	U64_BAD("0x-1");
	U64_BAD("0x 1");
	U64_BAD("1.5");
	U64_BAD("1e3");
	U64_BAD("0b101");
	U64_BAD("1,2");
}

static void test_parse_u64_empty(void)
{
	U64_BAD("");
	U64_BAD(NULL);
	U64_BAD("0x");
	U64_BAD("0X");
}

static void test_parse_u32(void)
{
	U32_OK("0", 0);
	U32_OK("010", 10);
	U32_OK("4294967295", UINT32_MAX);
	U32_OK("0xffffffff", UINT32_MAX);
	U32_OK("0x7FF", 0x7ff);
	U32_BAD("4294967296");
	U32_BAD("0x100000000");
	U32_BAD("18446744073709551615");
	U32_BAD("");
	U32_BAD(NULL);
	U32_BAD("0x");
	U32_BAD("-1");
	U32_BAD("3x");
}

/* ---- parse_ops ------------------------------------------------------------- */

static void test_parse_ops_writes_reads(void)
{
	OPS_OK("w:0x44=0x7ff", "w:68=2047");
	OPS_OK("w:0x44=0x7ff,w:0x30=0x301,w:0x38=0x50",
	       "w:68=2047 w:48=769 w:56=80");
	OPS_OK("r:0x0", "r:0");
	OPS_OK("r:0x414,w:0x41c=8", "r:1044 w:1052=8");
	OPS_OK("w:0xfffffffc=0xffffffff", "w:4294967292=4294967295");
	OPS_OK("w:16=010", "w:16=10"); /* decimal, not octal */
	OPS_OK("w:0=0", "w:0=0");
}

static void test_parse_ops_separators(void)
{
	/* s: "|=" or "="; c: "&=~" or "=" */
	OPS_OK("s:0x40C|=8", "s:1036=8");
	OPS_OK("s:0x10=1", "s:16=1");
	OPS_OK("c:0x410&=~0x8", "c:1040=8");
	OPS_OK("c:0x10=2", "c:16=2");
	OPS_OK("r:0x0,w:0x44=0x50,c:0x410&=~0x8,s:0x10=1,c:0x10=2,d:010",
	       "r:0 w:68=80 c:1040=8 s:16=1 c:16=2 d:10");
}

static void test_parse_ops_delay(void)
{
	OPS_OK("d:0", "d:0");
	OPS_OK("d:010", "d:10");
	OPS_OK("d:0x10", "d:16");
	OPS_OK("d:600000", "d:600000");
	OPS_BAD("--setup", "d:600001",
		"--setup: bad delay in 'd:600001' (milliseconds, at most 600000)");
	OPS_BAD("--ack", "d:abc",
		"--ack: bad delay in 'd:abc' (milliseconds, at most 600000)");
	OPS_BAD("--ack", "d:",
		"--ack: bad delay in 'd:' (milliseconds, at most 600000)");
	OPS_BAD("--ack", "d:5=1",
		"--ack: bad delay in 'd:5=1' (milliseconds, at most 600000)");
}

static void test_parse_ops_appends(void)
{
	struct op_list l = { 0 };
	char many[1024];
	size_t k, n = 0;

	CHECK(parse_ops("--setup", "w:0x44=0x7ff,w:0x38=0x50", &l) == 0);
	CHECK(parse_ops("--setup", "s:0x40C|=8", &l) == 0);
	CHECK_U64(l.n, 3);
	CHECK_STR(ops_text(&l), "w:68=2047 w:56=80 s:1036=8");
	ops_free(&l);

	/* more than the initial capacity (8) */
	for (k = 0; k < 20; k++)
		n += (size_t)snprintf(many + n, sizeof(many) - n, "%sw:%zu=%zu",
				      k ? "," : "", 4 * k, k);
	CHECK(parse_ops("--setup", many, &l) == 0);
	CHECK_U64(l.n, 20);
	CHECK_U64(l.v[0].off, 0);
	CHECK_U64(l.v[19].off, 76);
	CHECK_U64(l.v[19].val, 19);
	CHECK(l.v[19].kind == OP_WRITE);
	ops_free(&l);

	/* on an error, the ops before the bad one stay in the list */
	CHECK(parse_ops("--ack", "r:0,r:4,x:1", &l) == -1);
	CHECK_STR(ops_text(&l), "r:0 r:4");
	ops_free(&l);
}

static void test_parse_ops_empty(void)
{
	OPS_BAD("--setup", "", "--setup: empty OPS list");
	OPS_BAD("--ack", "r:0,,r:4", "--ack: empty op in 'r:0,,r:4'");
	OPS_BAD("--ack", ",r:0", "--ack: empty op in ',r:0'");
	OPS_BAD("--ack", "r:0,", "--ack: empty op in 'r:0,'");
	OPS_BAD("--ack", ",", "--ack: empty op in ','");
}

static void test_parse_ops_bad_form(void)
{
	static const char any[] =
		" (expected w:OFF=VAL, r:OFF, s:OFF|=VAL, c:OFF&=~VAL or d:MS)";
	char want[512], longop[256], shown[128];

	snprintf(want, sizeof(want), "--setup: bad op 'w0x44=1'%s", any);
	OPS_BAD("--setup", "w0x44=1", want);
	snprintf(want, sizeof(want), "--setup: bad op 'r'%s", any);
	OPS_BAD("--setup", "r", want);

	OPS_BAD("--setup", "x:0x44=1",
		"--setup: unknown op kind 'x' in 'x:0x44=1' (expected w, r, s, c or d)");
	OPS_BAD("--setup", "W:0x44=1",
		"--setup: unknown op kind 'W' in 'W:0x44=1' (expected w, r, s, c or d)");
	OPS_BAD("--setup", "::",
		"--setup: unknown op kind ':' in '::' (expected w, r, s, c or d)");
	OPS_BAD("--setup", "w:0x44", "--setup: bad op 'w:0x44' (expected w:OFF=VAL)");
	OPS_BAD("--setup", "s:4",
		"--setup: bad op 's:4' (expected s:OFF|=VAL or s:OFF=VAL)");
	OPS_BAD("--setup", "c:4",
		"--setup: bad op 'c:4' (expected c:OFF&=~VAL or c:OFF=VAL)");

	/* the op is quoted truncated to 127 bytes */
	memset(longop, 'y', sizeof(longop) - 1);
	longop[0] = 'x';
	longop[sizeof(longop) - 1] = '\0';
	memcpy(shown, longop, 127);
	shown[127] = '\0';
	snprintf(want, sizeof(want), "--setup: bad op '%s'%s", shown, any);
	OPS_BAD("--setup", longop, want);
}

static void test_parse_ops_bad_numbers(void)
{
	OPS_BAD("--setup", "w:0x42=1",
		"--setup: offset in 'w:0x42=1' is not 4-byte aligned");
	OPS_BAD("--setup", "r:2", "--setup: offset in 'r:2' is not 4-byte aligned");
	OPS_BAD("--setup", "w:0x44=0x100000000",
		"--setup: bad value in 'w:0x44=0x100000000' (32-bit number expected)");
	OPS_BAD("--setup", "w:4=",
		"--setup: bad value in 'w:4=' (32-bit number expected)");
	OPS_BAD("--setup", "w:4==",
		"--setup: bad value in 'w:4==' (32-bit number expected)");
	OPS_BAD("--setup", "w:0x100000000=1", "--setup: bad offset in 'w:0x100000000=1'");
	OPS_BAD("--setup", "w:=1", "--setup: bad offset in 'w:=1'");
	OPS_BAD("--setup", "r:", "--setup: bad offset in 'r:'");
	OPS_BAD("--setup", "r:4=1", "--setup: bad offset in 'r:4=1'");
	/* the wrong long separator for the kind: "=" splits, OFF keeps the rest */
	OPS_BAD("--ack", "s:0x40c&=8", "--ack: bad offset in 's:0x40c&=8'");
	OPS_BAD("--ack", "c:0x10|=1", "--ack: bad offset in 'c:0x10|=1'");
	/* the first separator of the kind's list wins, VAL keeps the rest */
	OPS_BAD("--ack", "s:4|=1=2",
		"--ack: bad value in 's:4|=1=2' (32-bit number expected)");
	OPS_BAD("--ack", "c:4&=~1&=~2",
		"--ack: bad value in 'c:4&=~1&=~2' (32-bit number expected)");
	OPS_BAD("--ack", "c:4&=~",
		"--ack: bad value in 'c:4&=~' (32-bit number expected)");
}

static void test_split_off_val(void)
{
	static const char *const sep_s[] = { "|=", "=", NULL };
	char b1[] = "4|=1", b2[] = "4=1", b3[] = "1=2|=3", b4[] = "4";
	char *off = NULL, *val = NULL;

	CHECK(split_off_val(b1, sep_s, &off, &val));
	CHECK_STR(off, "4");
	CHECK_STR(val, "1");
	CHECK(split_off_val(b2, sep_s, &off, &val));
	CHECK_STR(off, "4");
	CHECK_STR(val, "1");
	/* list order wins over position in the text */
	CHECK(split_off_val(b3, sep_s, &off, &val));
	CHECK_STR(off, "1=2");
	CHECK_STR(val, "3");
	off = val = NULL;
	CHECK(!split_off_val(b4, sep_s, &off, &val));
	CHECK(off == NULL && val == NULL);
	CHECK_STR(b4, "4");
}

static void test_jops(void)
{
	struct op_list l = { 0 };

	jreset();
	CHECK(parse_ops("--ack", "r:0x0,w:0x44=0x50,c:0x410&=~0x8,s:0x10=1,d:010",
			&l) == 0);
	jops("ack", &l);
	CHECK_STR(J.p,
		  "\"ack\":[{\"op\":\"r\",\"offset\":0},"
		  "{\"op\":\"w\",\"offset\":68,\"value\":\"0x00000050\"},"
		  "{\"op\":\"c\",\"offset\":1040,\"mask\":\"0x00000008\"},"
		  "{\"op\":\"s\",\"offset\":16,\"mask\":\"0x00000001\"},"
		  "{\"op\":\"d\",\"ms\":10}]");
	ops_free(&l);
	jops("setup", &l);
	CHECK_STR(J.p + strlen(J.p) - 11, ",\"setup\":[]");
	jreset();
}

/* ---- parse_offsets --------------------------------------------------------- */

static void test_parse_offsets(void)
{
	struct u64_list l = { 0 };
	char many[256];
	size_t k, n = 0;

	CHECK(parse_offsets("0xfe0,0xfe4,4072,0XFEC", &l) == 0);
	CHECK_STR(offsets_text(&l), "4064 4068 4072 4076");
	/* a second --offset appends */
	CHECK(parse_offsets("0,0xffffffffffffffff", &l) == 0);
	CHECK_STR(offsets_text(&l),
		  "4064 4068 4072 4076 0 18446744073709551615");
	free(l.v);
	memset(&l, 0, sizeof(l));

	/* more than the initial capacity (8) */
	for (k = 0; k < 17; k++)
		n += (size_t)snprintf(many + n, sizeof(many) - n, "%s%zu",
				      k ? "," : "", k * 4);
	CHECK(parse_offsets(many, &l) == 0);
	CHECK_U64(l.n, 17);
	CHECK_U64(l.v[16], 64);
	free(l.v);
	memset(&l, 0, sizeof(l));

	/* on an error, the offsets before the bad one stay in the list */
	CHECK(parse_offsets("1,2,x,4", &l) == -1);
	CHECK_STR(g_usage_msg, "--offset: bad number 'x'");
	CHECK_STR(offsets_text(&l), "1 2");
	free(l.v);
}

static void test_parse_offsets_bad(void)
{
	OFFSETS_BAD("", "--offset: empty item in ''");
	OFFSETS_BAD(",", "--offset: empty item in ','");
	OFFSETS_BAD("0x10,,0x14", "--offset: empty item in '0x10,,0x14'");
	OFFSETS_BAD("0x10,", "--offset: empty item in '0x10,'");
	OFFSETS_BAD(",0x10", "--offset: empty item in ',0x10'");
	OFFSETS_BAD("0xfz", "--offset: bad number '0xfz'");
	OFFSETS_BAD("-4", "--offset: bad number '-4'");
	OFFSETS_BAD("4, 8", "--offset: bad number ' 8'");
	OFFSETS_BAD("18446744073709551616", "--offset: bad number '18446744073709551616'");
}

/* ---- JSON string escaping -------------------------------------------------- */

static void test_json_escape_ascii(void)
{
	ESC("", "\"\"");
	ESC("9030000.pl061", "\"9030000.pl061\"");
	ESC("quote\"back\\slash", "\"quote\\\"back\\\\slash\"");
	ESC("a/b", "\"a/b\""); /* '/' is not escaped */
	ESC(" ~", "\" ~\"");
}

static void test_json_escape_controls(void)
{
	ESC("tab\tnl\nret\r", "\"tab\\tnl\\nret\\r\"");
	/* other controls and DEL as \u00XX (no \b or \f short forms) */
	ESC("\x01\x1f\x7f", "\"\\u0001\\u001f\\u007f\"");
	ESC("\b\f\v\x1b", "\"\\u0008\\u000c\\u000b\\u001b\"");
}

static void test_json_escape_utf8(void)
{
	ESC("caf\xc3\xa9", "\"caf\\u00e9\"");             /* U+00E9 */
	ESC("\xc2\x80", "\"\\u0080\"");                   /* U+0080, smallest 2-byte */
	ESC("\xe2\x82\xac", "\"\\u20ac\"");               /* U+20AC */
	ESC("\xef\xbf\xbf", "\"\\uffff\"");               /* U+FFFF */
	ESC("\xf0\x9f\x98\x80", "\"\\ud83d\\ude00\"");    /* U+1F600: surrogate pair */
	ESC("\xf0\x90\x80\x80", "\"\\ud800\\udc00\"");    /* U+10000 */
	ESC("\xf4\x8f\xbf\xbf", "\"\\udbff\\udfff\"");    /* U+10FFFF */
}

static void test_json_escape_invalid_utf8(void)
{
	/* bytes that are not valid UTF-8 are taken as Latin-1, one by one */
	ESC("bad\xff\xc3(", "\"bad\\u00ff\\u00c3(\"");
	ESC("\x80", "\"\\u0080\"");                         /* lone continuation */
	ESC("\xc0\xaf", "\"\\u00c0\\u00af\"");              /* overlong '/' */
	ESC("\xe0\x80\xaf", "\"\\u00e0\\u0080\\u00af\"");   /* overlong, 3 bytes */
	ESC("\xf0\x8f\xbf\xbf", "\"\\u00f0\\u008f\\u00bf\\u00bf\""); /* overlong, 4 */
	ESC("\xed\xa0\x80", "\"\\u00ed\\u00a0\\u0080\"");   /* surrogate U+D800 */
	ESC("\xf4\x90\x80\x80", "\"\\u00f4\\u0090\\u0080\\u0080\""); /* > U+10FFFF */
	ESC("\xe2\x82", "\"\\u00e2\\u0082\"");              /* truncated at end */
	ESC("\xe2\x82x", "\"\\u00e2\\u0082x\"");            /* truncated by ASCII */
	ESC("\xf8\x88\x80\x80\x80", "\"\\u00f8\\u0088\\u0080\\u0080\\u0080\"");
	ESC("\xc3\xa9\xff\xc3\xa9", "\"\\u00e9\\u00ff\\u00e9\"");
}

static void test_json_escape_long(void)
{
	char s[5001];
	char *e;

	memset(s, 'a', sizeof(s) - 1);
	s[sizeof(s) - 1] = '\0';
	s[2500] = '"';
	e = esc(s);
	CHECK(e != NULL);
	if (e) {
		CHECK_U64(strlen(e), 5000 + 2 + 1);
		CHECK(e[0] == '"' && e[2501] == '\\' && e[2502] == '"' &&
		      e[5002] == '"');
	}
	free(e);
}

/* ---- JSON writer ----------------------------------------------------------- */

static void test_json_members(void)
{
	jreset();
	jstr("a", "x");
	jobj("o");
	jint("i", -5);
	jint("min", LLONG_MIN);
	juint("u", UINT64_MAX);
	jarr("l");
	jstr(NULL, "s");
	jnull(NULL);
	jbool(NULL, true);
	jbool(NULL, false);
	jobj(NULL);
	jclose();
	jarr(NULL);
	jclose();
	jclose();
	jclose();
	jstr("n", NULL);
	jstr("k\"ey", "v");
	CHECK_STR(J.p,
		  "\"a\":\"x\",\"o\":{\"i\":-5,\"min\":-9223372036854775808,"
		  "\"u\":18446744073709551615,"
		  "\"l\":[\"s\",null,true,false,{},[]]},\"n\":null,"
		  "\"k\\\"ey\":\"v\"");
	CHECK(J.depth == 0 && !J.oom);
	jreset();
}

static void test_json_numbers(void)
{
	jreset();
	jhexw("w4", 0x11, 4);
	jhexw("w1", 5, 1);
	jhexw("w2", 0xabc, 2);
	jhexw("w8", 0x1234, 8);
	jhexw("wide", 0x123, 1); /* 2*width is a minimum, nothing is cut */
	jhex("iova", 0x10000000);
	jhex("zero", 0);
	jms("t", 1.23456);
	jms("e", 468.8);
	jms("neg", -1);
	CHECK_STR(J.p,
		  "\"w4\":\"0x00000011\",\"w1\":\"0x05\",\"w2\":\"0x0abc\","
		  "\"w8\":\"0x0000000000001234\",\"wide\":\"0x123\","
		  "\"iova\":\"0x10000000\",\"zero\":\"0x0\","
		  "\"t\":1.235,\"e\":468.800,\"neg\":0.000");
	jreset();
}

static void test_json_close(void)
{
	int k;

	jreset();
	jclose(); /* at the top: nothing */
	jobj("a");
	jarr("b");
	jobj(NULL);
	jclose_all();
	jbool("c", true);
	CHECK_STR(J.p, "\"a\":{\"b\":[{}]},\"c\":true");
	CHECK(J.depth == 0 && !J.oom);
	jreset();

	/* JMAX_DEPTH levels are fine; one more marks the buffer broken */
	for (k = 0; k < JMAX_DEPTH; k++)
		jarr(NULL);
	CHECK(J.depth == JMAX_DEPTH && !J.oom);
	jarr(NULL);
	CHECK(J.oom);
	CHECK(J.depth == JMAX_DEPTH); /* the level was refused, not opened */
	jreset();
}

static void test_json_jprintf_truncates(void)
{
	struct jbuf b = JBUF_INIT;
	char s[201];

	memset(s, 'z', sizeof(s) - 1);
	s[sizeof(s) - 1] = '\0';
	jprintf(&b, "%s", s); /* one jprintf writes at most 127 bytes */
	CHECK_U64(b.len, 127);
	CHECK_U64(strlen(b.p), 127);
	free(b.p);
}

int main(void)
{
	RUN(test_parse_u64_decimal);
	RUN(test_parse_u64_hex);
	RUN(test_parse_u64_overflow);
	RUN(test_parse_u64_junk);
	RUN(test_parse_u64_empty);
	RUN(test_parse_u32);
	RUN(test_parse_ops_writes_reads);
	RUN(test_parse_ops_separators);
	RUN(test_parse_ops_delay);
	RUN(test_parse_ops_appends);
	RUN(test_parse_ops_empty);
	RUN(test_parse_ops_bad_form);
	RUN(test_parse_ops_bad_numbers);
	RUN(test_split_off_val);
	RUN(test_jops);
	RUN(test_parse_offsets);
	RUN(test_parse_offsets_bad);
	RUN(test_json_escape_ascii);
	RUN(test_json_escape_controls);
	RUN(test_json_escape_utf8);
	RUN(test_json_escape_invalid_utf8);
	RUN(test_json_escape_long);
	RUN(test_json_members);
	RUN(test_json_numbers);
	RUN(test_json_close);
	RUN(test_json_jprintf_truncates);
	printf("%d passed, %d failed\n", g_passed, g_failed);
	return g_failed ? 1 : 0;
}
