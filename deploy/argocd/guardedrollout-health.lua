-- Argo CD health of a GuardedRollout (guardrails.dev/v1alpha1), read from the phase and
-- the conditions the operator sets (docs/troubleshooting.md lists them).
--   Degraded:    Stalled=True (a rollback, an invalid spec, a missing target: a person
--                must act), TrafficRouted=False (the route does not carry the decided
--                weights) or TargetConflict=True (another writer scales the target up)
--   Suspended:   Paused (spec.paused or a pause step waiting for a promote) or Blocked
--                (the revision waits for the budget gate)
--   Healthy:     Ready=True (Idle or Succeeded: the primary serves an analysed revision)
--   Progressing: everything else, and until the operator has seen the latest spec
local hs = { status = "Progressing", message = "Waiting for the operator" }
local status = obj.status
if status == nil then
  return hs
end
local generation = obj.metadata and obj.metadata.generation
if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  hs.message = "Waiting for the operator to observe generation " .. generation
  return hs
end

local function condition(kind, value)
  for _, c in ipairs(status.conditions or {}) do
    if c.type == kind and c.status == value then
      return c
    end
  end
  return nil
end

local function said(c)
  local reason = c.reason or c.type
  if c.message ~= nil and c.message ~= "" then
    return reason .. ": " .. c.message
  end
  return reason
end

local phase = status.phase or "Initializing"
local problem = condition("Stalled", "True") or condition("TrafficRouted", "False")
  or condition("TargetConflict", "True")
if problem ~= nil then
  hs.status = "Degraded"
  hs.message = said(problem)
  return hs
end
if phase == "Paused" or phase == "Blocked" then
  hs.status = "Suspended"
elseif condition("Ready", "True") ~= nil then
  hs.status = "Healthy"
else
  hs.status = "Progressing"
end
hs.message = phase
if status.message ~= nil and status.message ~= "" then
  hs.message = phase .. ": " .. status.message
end
return hs
