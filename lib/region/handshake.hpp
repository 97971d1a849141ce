// The fast path's handshake on the server's socket (docs/DESIGN.md, "The handshake"): what a
// client sends, what the server answers, and the descriptors that come with the answer. Both
// ends use these functions, so the wire format has one definition.
//
// Contract: a connection carries one Hello (client to server), then one Grant with exactly two
// descriptors (the region's memfd, the group's eventfd), then nothing: the client keeps it open
// while it maps the region, and its end tells the server that the client is gone.
// Everything received is checked before use: sizes exact, magic and version known, descriptors
// exactly two (extra ones are closed, never leaked).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

#include <synchmess/synchmess.h>

#include "core/result.hpp"

namespace synchmess::region::handshake {

inline constexpr uint32_t kGrantMagic = 0x47594d53;  // "SMYG"
inline constexpr uint32_t kProtocolVersion = 1;

struct Hello {
  uint8_t secret[SYNCH_FASTPATH_SECRET_BYTES];
};
static_assert(sizeof(Hello) == SYNCH_FASTPATH_SECRET_BYTES, "a hello is the secret alone");

struct Grant {
  uint32_t magic;
  uint32_t version;  // the region's layout version (region::kLayoutVersion)
  uint32_t slot;     // the client's entry in the region's client table
  uint32_t reserved;
  uint64_t region_bytes;  // the memfd's size
};
static_assert(sizeof(Grant) == 24, "the grant's wire size");

// The socket is an abstract one (a name, no file: the secret is what authorizes), named by an
// offer's socket_name field (at most SYNCH_FASTPATH_SOCKET_MAX bytes, not NUL-terminated).

// Connects to the abstract socket `name` (SOCK_SEQPACKET, close-on-exec); the descriptor.
core::Result<int> connect_to(std::string_view name) noexcept;
// Binds and listens on the abstract socket `name` (non-blocking, close-on-exec).
core::Result<int> listen_on(std::string_view name, int backlog) noexcept;

// Server: the grant with [memfd, eventfd]. EPIPE/ECONNRESET when the client went.
core::Status send_grant(int socket, const Grant& grant, int memfd, int eventfd) noexcept;

struct Received {
  Grant grant;
  int memfd;
  int eventfd;
};
// Client: waits for the grant (the socket is blocking; the server answers at once). EPROTO for
// anything but one well-formed grant with two descriptors (they are closed then); ECONNRESET
// when the server closed the connection (a refusal).
core::Result<Received> receive_grant(int socket) noexcept;

}  // namespace synchmess::region::handshake
