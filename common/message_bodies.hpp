#pragma once

// The body of each message, written and read through the wire archives: its fields in order,
// every length and enum bounded, every rule PROTOCOL.md gives for it checked. codec.cpp frames
// them (header, token, trailing checksum). Included by the codec only.

#include <cstddef>
#include <span>

#include "common/protocol.hpp"
#include "common/wire_archive.hpp"

namespace ferry::codec::wire {

using out_archive = span_output_archive;
using in_archive = span_input_archive;

// Writing throws codec_error{bad_request} for a message that breaks a limit; reading throws
// codec_error{malformed} (or bad_request, corrupt) for bytes that are not a valid body.
void save_body(out_archive& ar, const protocol::list_request& m);
void load_body(in_archive& ar, protocol::list_request& m);
void save_body(out_archive& ar, const protocol::stat_request& m);
void load_body(in_archive& ar, protocol::stat_request& m);
// A GET-RUN carries its count (`run`); a plain GET is a run of one.
void save_body(out_archive& ar, const protocol::get_request& m);
void load_body(in_archive& ar, protocol::get_request& m, bool run);
void save_body(out_archive& ar, const protocol::list_reply& m);
void load_body(in_archive& ar, protocol::list_reply& m);
void save_body(out_archive& ar, const protocol::stat_reply& m);
void load_body(in_archive& ar, protocol::stat_reply& m);
void save_body(out_archive& ar, const protocol::token_reply& m);
void load_body(in_archive& ar, protocol::token_reply& m);
void save_body(out_archive& ar, const protocol::error_reply& m);
void load_body(in_archive& ar, protocol::error_reply& m);

// A data reply up to its payload; `before_fields` is the header already written before `ar`'s
// span, which the checksum covers.
void save_data_prefix(out_archive& ar, std::span<const std::byte> before_fields,
                      const protocol::data_reply& m, std::span<const std::byte> payload);
// A data reply whose payload is the rest of the datagram; its payload points into it.
void load_body(in_archive& ar, protocol::data_reply& m, std::span<const std::byte> before_fields);

}  // namespace ferry::codec::wire
