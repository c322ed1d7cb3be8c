# Generated; regenerate with: scripts/gen_codec_tests.sh
