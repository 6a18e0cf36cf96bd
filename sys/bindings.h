/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The C interfaces the module needs that the kernel crate's bindings do not cover:
 * the device-mapper dirty-log API and the connector. bindgen turns this into
 * sys/bindings_generated.rs at build time (see Kbuild).
 */
#include <linux/device-mapper.h>
#include <linux/dm-dirty-log.h>
#include <linux/connector.h>
