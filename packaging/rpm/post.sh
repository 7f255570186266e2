# $1: 1 on install, 2+ on upgrade. Nothing to do when systemd is not PID 1 (containers, chroots).
if [ -d /run/systemd/system ]; then
  systemctl daemon-reload || :
  if [ "$1" -eq 1 ]; then
    systemctl enable --now nodeward-agent.service || :
  fi
fi
