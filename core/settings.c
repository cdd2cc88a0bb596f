/* core/settings.c — the core's own settings (group "core" in conf.d). */
#include "server.h"

const rdv_setting rdv_core_settings[] = {
    RDV_SETTING_STRLIST(rdv_core_cfg, modules, 0, "modules to load (their order only breaks ties of the dependency sort)"),
    RDV_SETTING_STRING(rdv_core_cfg, module_path, "", 0, "':'-separated directories searched for <module>.so (empty: build tree, then install dir)"),
    RDV_SETTING_STRING(rdv_core_cfg, log_level, "info", RDV_SETF_RELOAD, "error, warn, notice, info or debug"),
    RDV_SETTING_STRING(rdv_core_cfg, admin_socket, "rdvd.sock", 0, "admin console Unix socket path (empty: no console)"),
    RDV_SETTING_INT(rdv_core_cfg, max_connections, 100000, 1, 10000000, 0, "accepted connections open at once (more are refused)"),
    RDV_SETTING_INT(rdv_core_cfg, max_frame, 1048576, 65536, 0x3FFFFFFF, 0, "largest TCP frame payload accepted, bytes (wire.md §3.3)"),
    RDV_SETTING_INT(rdv_core_cfg, idle_ms, 30000, 100, 86400000, 0, "TCP idle limit between complete frames, ms"),
    RDV_SETTING_INT(rdv_core_cfg, write_queue_max, 4194304, 4096, 1073741824, 0, "bytes queued for a reader that does not keep up before it is closed (the queue may exceed it by one message)"),
    RDV_SETTING_INT(rdv_core_cfg, read_total, 268435456, 131072, 68719476736LL, RDV_SETF_RELOAD, "bytes all TCP connections together may hold in read buffers (frames still arriving); a connection whose buffer would grow past it is closed; at least max_frame + 16 and read_buffer"),
    RDV_SETTING_INT(rdv_core_cfg, write_total, 268435456, 131072, 68719476736LL, RDV_SETF_RELOAD, "bytes all TCP connections together may hold in write queues (answers a reader has not taken yet); a connection whose queue would grow past it is closed; at least write_queue_max + max_frame + 64"),
    RDV_SETTING_INT(rdv_core_cfg, read_buffer, 262144, 4096, 67108864, 0, "read buffer cap of raw (module-owned) connections, bytes"),
    RDV_SETTING_INT(rdv_core_cfg, shutdown_ms, 5000, 0, 600000, RDV_SETF_RELOAD, "how long SIGTERM waits for queued replies, ms"),
    RDV_SETTING_INT(rdv_core_cfg, udp_rcvbuf, 0, 0, 1073741824, 0, "SO_RCVBUF of UDP sockets (0: system default; hbbs --rmem)"),
    RDV_SETTING_INT(rdv_core_cfg, udp_batch, 64, 1, 64, 0, "datagrams read (recvmmsg) per wake-up before other work runs"),
    RDV_SETTING_INT(rdv_core_cfg, udp_coalesce_us, 500, 0, 10000, RDV_SETF_RELOAD, "when a datagram arrives less than this after the last UDP wake-up began, read UDP on a tick of this many µs (counted from the wake-up) until a tick finds nothing: fewer wake-ups, at most this added to a reply; not while most datagrams come from sources that sent within this (a client waiting for each answer, or a flood); 0: off"),
    RDV_SETTING_STRING(rdv_core_cfg, user, "", 0, "run as this user from right after reading the configuration: admin socket, keys, database, modules and connections are all its (rdvd must start as root; the working directory must be writable by it, the conf directory readable for reloads; ports below 1024 then need CAP_NET_BIND_SERVICE); empty: stay as started"),
    RDV_SETTING_BOOL(rdv_core_cfg, ipv6, 1, 0, "bind [::] dual stack (falls back to IPv4 when the host has no IPv6)"),
    RDV_SETTING_END,
};

const rdv_setting rdv_listener_settings[] = {
    RDV_SETTING_STRING(rdv_listener_cfg, name, "", 0, "name handlers filter on, e.g. main or nat"),
    RDV_SETTING_STRING(rdv_listener_cfg, bind, "", 0, "address to bind (empty: all, dual stack)"),
    RDV_SETTING_INT(rdv_listener_cfg, port, 0, 1, 65535, 0, "port"),
    RDV_SETTING_BOOL(rdv_listener_cfg, udp, 0, 0, "open a UDP socket"),
    RDV_SETTING_BOOL(rdv_listener_cfg, tcp, 1, 0, "open a TCP listener"),
    RDV_SETTING_INT(rdv_listener_cfg, idle_ms, 0, 0, 86400000, 0, "TCP idle limit (0: core.idle_ms)"),
    RDV_SETTING_INT(rdv_listener_cfg, sndbuf, 65536, 0, 67108864, 0, "SO_SNDBUF of its TCP connections, bytes (the kernel doubles it): what a client that does not read makes the kernel hold for it, besides core.write_queue_max; answers are under 1 KiB; 0: the kernel's autotuning, up to net.ipv4.tcp_wmem's maximum (4 MiB by default)"),
    RDV_SETTING_END,
};
