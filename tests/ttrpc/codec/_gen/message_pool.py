# Generated; regenerate with: scripts/gen_codec_tests.sh
import betterproto2

default_message_pool = betterproto2.MessagePool()
