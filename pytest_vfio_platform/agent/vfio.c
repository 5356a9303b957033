// SPDX-License-Identifier: MIT
/*
 * vfio.c — opening the device, device/region/IRQ info, register access,
 * interrupts (see vfio.h).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <setjmp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/types.h>
#include <unistd.h>

#include <linux/types.h>
#include <linux/vfio.h>
#if defined(__has_include)
#if __has_include(<linux/iommufd.h>)
#include <linux/iommufd.h>
#endif
#endif

#include "agent.h"
#include "cmd.h"
#include "json.h"
#include "vfio.h"

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

const char *const iommu_names[] = {
	[IOMMU_DEFAULT] = "default",
	[IOMMU_TYPE1] = "type1",
	[IOMMU_TYPE1V2] = "type1v2",
	[IOMMU_NOIOMMU] = "noiommu",
	[IOMMU_NONE] = "none",
};

/* ======================================================================== */
/* Syscall helpers                                                          */
/* ======================================================================== */

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

/* ======================================================================== */
/* Signals                                                                  */
/* ======================================================================== */

volatile sig_atomic_t g_signal;

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

void install_signals(void)
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

int open_device(const struct args *a, struct session *s)
{
	if (a->sel == SEL_CDEV)
		return open_cdev_path(a, s);
	return open_group_path(a, s);
}

void close_session(struct session *s)
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
/* Device info, regions, register access                                    */
/* ======================================================================== */

int get_device_info(int fd, struct vfio_device_info *di)
{
	memset(di, 0, sizeof(*di));
	di->argsz = sizeof(*di);
	return xioctl(fd, VFIO_DEVICE_GET_INFO, di, "VFIO_DEVICE_GET_INFO");
}

void jdevice_info(const struct vfio_device_info *di)
{
	jobj("device_info");
	jflags(di->flags, device_flag_names);
	juint("num_regions", di->num_regions);
	juint("num_irqs", di->num_irqs);
	jclose();
}

int get_region_info(int fd, uint32_t index, struct vfio_region_info *ri)
{
	memset(ri, 0, sizeof(*ri));
	ri->argsz = sizeof(*ri);
	ri->index = index;
	return xioctl(fd, VFIO_DEVICE_GET_REGION_INFO, ri,
		      "VFIO_DEVICE_GET_REGION_INFO");
}

void jregion_members(const struct vfio_region_info *ri)
{
	juint("index", ri->index);
	juint("size", ri->size);
	juint("offset", ri->offset);
	jflags(ri->flags, region_flag_names);
}

int get_irq_info(int fd, uint32_t index, struct vfio_irq_info *ii)
{
	memset(ii, 0, sizeof(*ii));
	ii->argsz = sizeof(*ii);
	ii->index = index;
	return xioctl(fd, VFIO_DEVICE_GET_IRQ_INFO, ii,
		      "VFIO_DEVICE_GET_IRQ_INFO");
}

void jirq_members(const struct vfio_irq_info *ii)
{
	juint("index", ii->index);
	juint("count", ii->count);
	jflags(ii->flags, irq_flag_names);
}

int region_open(int fd, uint32_t index, enum via via, struct region *r)
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

void region_close(struct region *r)
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

int region_read(struct region *r, uint64_t off, uint32_t width,
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

int region_write32(struct region *r, uint64_t off, uint32_t val)
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
/* Interrupts                                                               */
/* ======================================================================== */

int set_irqs(int fd, uint32_t flags, uint32_t index, uint32_t count,
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
