# Generated; regenerate with: scripts/gen_example.sh
import betterproto2

default_message_pool = betterproto2.MessagePool()
