// SPDX-License-Identifier: MIT
/*
 * ops.c — numbers, register OPS and --offset lists (see ops.h).
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "agent.h"
#include "json.h"
#include "ops.h"

const char *const op_letters[] = {
	[OP_WRITE] = "w", [OP_READ] = "r", [OP_SET] = "s", [OP_CLEAR] = "c",
	[OP_DELAY] = "d",
};

bool parse_u64(const char *s, uint64_t *out)
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

bool parse_u32(const char *s, uint32_t *out)
{
	uint64_t v;

	if (!parse_u64(s, &v) || v > UINT32_MAX)
		return false;
	*out = (uint32_t)v;
	return true;
}

int op_push(struct op_list *l, struct reg_op op)
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

bool split_off_val(char *body, const char *const *seps, char **off,
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

int parse_ops(const char *opt, const char *text, struct op_list *l)
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

int parse_offsets(const char *text, struct u64_list *l)
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

void jops(const char *key, const struct op_list *l)
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
