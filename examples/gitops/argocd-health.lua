-- Argo CD health check for ephemera.dev/TestInstallation (gopher-lua, Lua 5.1).
-- Ready -> Healthy; Pending, Provisioning, Upgrading, Terminating -> Progressing;
-- Hibernated -> Suspended; Failed, or Stalled=True -> Degraded.
local hs = {}
if obj.status == nil or obj.status.phase == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the ephemera controller"
  return hs
end
local generation = obj.metadata.generation
local observed = obj.status.observedGeneration
if generation ~= nil and observed ~= nil and observed < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the ephemera controller to see the latest spec"
  return hs
end
local stalled = false
if obj.status.conditions ~= nil then
  for _, condition in ipairs(obj.status.conditions) do
    if condition.type == "Stalled" and condition.status == "True" then
      stalled = true
    end
  end
end
local phase = obj.status.phase
if stalled or phase == "Failed" then
  hs.status = "Degraded"
elseif phase == "Ready" then
  hs.status = "Healthy"
elseif phase == "Hibernated" then
  hs.status = "Suspended"
else
  hs.status = "Progressing"
end
hs.message = obj.status.message or phase
return hs
