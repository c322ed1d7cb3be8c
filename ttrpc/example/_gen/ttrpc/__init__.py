# Generated; regenerate with: scripts/gen_example.sh
