# $1: 0 on removal, 1+ on upgrade: restart the running agent on the new binary.
if [ -d /run/systemd/system ]; then
  systemctl daemon-reload || :
  if [ "$1" -ge 1 ]; then
    systemctl try-restart nodeward-agent.service || :
  fi
fi
