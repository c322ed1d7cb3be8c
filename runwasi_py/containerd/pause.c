/* The pod sandbox ("pause") process of a runwasi-py CRI harness.
 *
 * It holds the pod's namespaces open and does nothing else: it waits for signals, reaps
 * any child it inherits (it is pid 1 of the pod's pid namespace), and exits 0 on SIGTERM or
 * SIGINT so that StopPodSandbox ends it without waiting for a SIGKILL.
 * Built with `gcc -static` by runwasi_py/containerd/_pause.py.
 */
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static void on_stop(int sig) {
    (void)sig;
    _exit(0);
}

static void on_child(int sig) {
    (void)sig;
    while (waitpid(-1, NULL, WNOHANG) > 0) {
    }
}

int main(void) {
    struct sigaction stop = {0}, child = {0};
    stop.sa_handler = on_stop;
    child.sa_handler = on_child;
    child.sa_flags = SA_NOCLDSTOP | SA_RESTART;
    if (sigaction(SIGTERM, &stop, NULL) < 0 || sigaction(SIGINT, &stop, NULL) < 0 ||
        sigaction(SIGCHLD, &child, NULL) < 0) {
        return 1;
    }
    for (;;) {
        pause();
    }
}
