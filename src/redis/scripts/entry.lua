-- entry: the stream entry layout for the scripts that append events (prepended to them by the
-- registry). The layout is not written here: `queue::entry` defines it and passes it as the
-- scripts' first argument (the version field and value, then the names of an event's fields,
-- newline-separated), so the one encoder of entries is the Rust one.
local function entry_layout(text)
  local names = {}
  for part in string.gmatch(text, '[^\n]+') do names[#names + 1] = part end
  return names
end

-- Appends one event's field/value pairs to `fields`, in the layout's order.
local function entry_event(layout, fields, id, tenant, etype, ct, body)
  local f = #fields
  local values = {id, tenant, etype, ct, body}
  for i = 1, 5 do
    fields[f + 2 * i - 1] = layout[2 + i]
    fields[f + 2 * i] = values[i]
  end
end

-- A new entry's fields, starting with the format version.
local function entry_start(layout)
  return {layout[1], layout[2]}
end
