/* SPDX-License-Identifier: MIT */
/*
 * ops.h — parsing of the command line's numbers and lists: parse_u64/u32,
 * the register OPS of --setup/--ack (parse_ops) and the --offset list
 * (parse_offsets).  Pure functions of their text (no VFIO); unit-tested by
 * tests/test_parsers.c.  Errors: -1 with g_usage_msg set (agent.h).
 */
#ifndef VFIO_AGENT_OPS_H
#define VFIO_AGENT_OPS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * Parse an unsigned number: "0x"/"0X" prefix = hex, otherwise decimal (a
 * leading 0 does NOT mean octal).  The whole string must be consumed.
 * *out is only written on success.
 */
bool parse_u64(const char *s, uint64_t *out);
bool parse_u32(const char *s, uint32_t *out);

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

/* "w", "r", "s", "c", "d" by enum op_kind (the JSON "op" field). */
extern const char *const op_letters[];

int op_push(struct op_list *l, struct reg_op op);

/*
 * Split body "OFF<sep>VAL" in place at the first separator of seps[] (a
 * NULL-terminated list, tried in order) that occurs in it.
 */
bool split_off_val(char *body, const char *const *seps, char **off,
		   char **val);

/*
 * Parse one OPS string (comma-separated) and append to l; opt ("--setup",
 * "--ack") prefixes the error messages.
 *   w:OFF=VAL            32-bit write
 *   r:OFF                32-bit read (value logged)
 *   s:OFF|=VAL  s:OFF=VAL      read-modify-write, set bits
 *   c:OFF&=~VAL c:OFF=VAL      read-modify-write, clear bits
 *   d:MS                 sleep MS milliseconds (at most 600000)
 * OFF must be 4-byte aligned.  Returns 0, or -1 with g_usage_msg set (the
 * ops before the bad one stay appended).
 */
int parse_ops(const char *opt, const char *text, struct op_list *l);

/* Append the ops of l as JSON array `key` (the --dry-run "setup"/"ack"). */
void jops(const char *key, const struct op_list *l);

/* ---- --offset ------------------------------------------------------------ */

struct u64_list {
	uint64_t *v;
	size_t n, cap;
};

/* Comma-separated offsets for `read`, appended to l.  0, or -1 (usage). */
int parse_offsets(const char *text, struct u64_list *l);

#endif
