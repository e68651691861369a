-- wrk script of bench/load.sh: one prepared request per line of a file.
--
--   wrk -s bench/load/lines.lua URL -- FILE THREADS EXPECTED_STATUS [USED_OUT]
--
-- A line is "<path>" or "<path><TAB><Cookie header value>". Thread t of THREADS takes the lines
-- t+1, t+1+THREADS, ... in turn, so no two connections send the same line at the same time
-- until the lines run out; then each thread starts over on its own lines (a repeat).
-- done() prints one "RESULT key=value ..." line: requests, req/s, p50/p99 in ms, non-2xx,
-- responses other than EXPECTED_STATUS, socket errors, how many requests were a line's first
-- use and how many were sent, the status counts. With USED_OUT it also writes the lines used.

local threads = {}
local created = 0

function setup(thread)
   thread:set("thread_index", created)
   created = created + 1
   table.insert(threads, thread)
end

function init(args)
   local file, total = args[1], tonumber(args[2])
   expected = tonumber(args[3])
   used_out = args[4]
   mine, raw = {}, {}
   local number = 0
   for line in io.lines(file) do
      if line ~= "" then
         number = number + 1
         if (number - 1) % total == thread_index then
            local path, cookie = line:match("^([^\t]+)\t(.+)$")
            local headers = nil
            if path then
               headers = { Cookie = cookie }
            else
               path = line
            end
            table.insert(mine, wrk.format("GET", path, headers))
            table.insert(raw, line)
         end
      end
   end
   lines_total = number
   if #mine == 0 then
      error("no lines for thread " .. thread_index .. " in " .. file)
   end
   position, first_uses, statuses = 0, 0, {}
end

function request()
   position = position + 1
   if position <= #mine then
      first_uses = first_uses + 1
   end
   return mine[(position - 1) % #mine + 1]
end

function response(status, headers, body)
   statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
   local counts, first, sent, lines = {}, 0, 0, 0
   local non2xx, unexpected = 0, 0
   local out = nil
   for _, thread in ipairs(threads) do
      for status, count in pairs(thread:get("statuses")) do
         counts[status] = (counts[status] or 0) + count
         if status < 200 or status > 299 then non2xx = non2xx + count end
         if status ~= thread:get("expected") then unexpected = unexpected + count end
      end
      first = first + thread:get("first_uses")
      sent = sent + thread:get("position")
      lines = thread:get("lines_total")
      local path = thread:get("used_out")
      if path then
         out = out or io.open(path, "w")
         local raw = thread:get("raw")
         for index = 1, math.min(thread:get("first_uses"), #raw) do
            out:write(raw[index], "\n")
         end
      end
   end
   if out then out:close() end
   local shown = {}
   for status, count in pairs(counts) do
      table.insert(shown, status .. ":" .. count)
   end
   table.sort(shown)
   local errors = summary.errors
   local seconds = summary.duration / 1e6
   io.write(string.format(
      "RESULT requests=%d seconds=%.2f rps=%.1f p50_ms=%.2f p99_ms=%.2f non2xx=%d " ..
      "unexpected=%d errors=%d first_uses=%d sent=%d lines=%d statuses=%s\n",
      summary.requests, seconds, summary.requests / seconds,
      latency:percentile(50) / 1000, latency:percentile(99) / 1000, non2xx, unexpected,
      errors.connect + errors.read + errors.write + errors.timeout, first, sent, lines,
      #shown > 0 and table.concat(shown, ",") or "-"))
end
