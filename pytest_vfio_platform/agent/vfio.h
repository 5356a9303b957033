/* SPDX-License-Identifier: MIT */
/*
 * vfio.h — the VFIO side: opening the device (group, noiommu group or cdev
 * + iommufd), device/region/IRQ info and its JSON, register access to a
 * region by mmap or pread/pwrite (a SIGBUS/SIGSEGV is reported, not fatal),
 * VFIO_DEVICE_SET_IRQS, and the signal handlers.
 */
#ifndef VFIO_AGENT_VFIO_H
#define VFIO_AGENT_VFIO_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include <linux/types.h>
#include <linux/vfio.h>

struct args;

enum sel { SEL_NONE, SEL_GROUP, SEL_CDEV, SEL_NOIOMMU };
enum iommu_kind { IOMMU_DEFAULT, IOMMU_TYPE1, IOMMU_TYPE1V2, IOMMU_NOIOMMU,
		  IOMMU_NONE };
enum via { VIA_MMAP, VIA_PREAD };

/* "default", "type1", "type1v2", "noiommu", "none" by enum iommu_kind. */
extern const char *const iommu_names[];

/* SIGTERM/SIGINT/SIGHUP received (0: none); they interrupt the irq wait. */
extern volatile sig_atomic_t g_signal;

/* Catch SIGTERM/SIGINT/SIGHUP (g_signal) and SIGBUS/SIGSEGV (mmap access). */
void install_signals(void);

/* ---- opening the device ------------------------------------------------- */

struct session {
	int group_fd, container_fd, iommufd, device_fd;
	uint32_t ioas_id;
	void *dma_buf;
	size_t dma_len;
};

#define SESSION_INIT { -1, -1, -1, -1, 0, NULL, 0 }

/*
 * Open a->device through a->sel (writing the "group" or "cdev" JSON object);
 * s->device_fd on success.  0, or -1 with g_err set.
 */
int open_device(const struct args *a, struct session *s);
void close_session(struct session *s);

/* ---- device, region and IRQ info ---------------------------------------- */

int get_device_info(int fd, struct vfio_device_info *di);
void jdevice_info(const struct vfio_device_info *di); /* "device_info" */
int get_region_info(int fd, uint32_t index, struct vfio_region_info *ri);
void jregion_members(const struct vfio_region_info *ri);
int get_irq_info(int fd, uint32_t index, struct vfio_irq_info *ii);
void jirq_members(const struct vfio_irq_info *ii);

/* ---- register access ---------------------------------------------------- */

/* A device region opened for register access by mmap or pread/pwrite. */
struct region {
	int fd;
	struct vfio_region_info ri;
	enum via via;
	volatile uint8_t *map;
	size_t maplen;
};

/* On failure r->ri.argsz != 0 iff r->ri holds the region's info. */
int region_open(int fd, uint32_t index, enum via via, struct region *r);
void region_close(struct region *r);
int region_read(struct region *r, uint64_t off, uint32_t width,
		uint64_t *val);
int region_write32(struct region *r, uint64_t off, uint32_t val);

/* ---- interrupts ----------------------------------------------------------- */

/* VFIO_DEVICE_SET_IRQS, start 0; efd (one eventfd) or NULL for DATA_NONE. */
int set_irqs(int fd, uint32_t flags, uint32_t index, uint32_t count,
	     const int32_t *efd, const char *step);

#endif
