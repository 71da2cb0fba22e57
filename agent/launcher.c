/* The `gyroscope` command of an editable install (.ci/setup compiles it to .venv/bin/gyroscope).

   For `gyroscope run [OPTIONS] app.py ARGS` (or `-m mod`, or `-`) it starts the program's
   process first, behind the gate, exactly as agent/launch.py's Launch does (the same python, the
   bootstrap on PYTHONPATH, the gate's pipe in GYROSCOPE_BRIDGE, the standard descriptors
   gyroscope was started without held on /dev/null and closed in the program), then becomes
   gyroscope's own python (exec: the same process, so the program stays its child) with
   GYROSCOPE_LAUNCHED telling it which process waits at which gate. The program's interpreter
   then starts beside gyroscope's on the other core instead of after it (~8 ms sooner).

   It reads the command line more strictly than agent/launch.py's program_argv: options spelled
   in full only, no empty value or value starting with '-'. Anything else (help, abbreviations,
   errors, the other commands) goes to gyroscope's python untouched, which starts the program
   itself. gyroscope's python checks that its own reading gives the same program arguments and
   otherwise makes this process leave before its first line (agent/launch.py adopt).

   GYROSCOPE_PYTHON, GYROSCOPE_ENTRY, GYROSCOPE_BOOT and the option tables come from
   launcher_config.h, which agent/launch.py's c_header() writes (one place for the options). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "launcher_config.h"

extern char **environ;

static int in_table(const char *const *table, const char *name, size_t len) {
    for (; *table; table++)
        if (strlen(*table) == len && strncmp(*table, name, len) == 0)
            return 1;
    return 0;
}

/* The index in argv where python's arguments start, or 0 when only gyroscope's python can tell. */
static int program_start(int argc, char **argv) {
    int i = 2;
    while (i < argc) {
        const char *arg = argv[i];
        if (strcmp(arg, "-m") == 0)
            return (i + 1 < argc && argv[i + 1][0] != '-') ? i : 0;
        if (strcmp(arg, "-") == 0 || arg[0] != '-')
            return i;
        const char *eq = strchr(arg, '=');
        size_t len = eq ? (size_t)(eq - arg) : strlen(arg);
        if (in_table(VALUE_OPTIONS, arg, len)) {
            const char *value = eq ? eq + 1 : (i + 1 < argc ? argv[i + 1] : NULL);
            if (value == NULL || value[0] == '\0' || value[0] == '-')
                return 0;
            i += eq ? 1 : 2;
        } else if (!eq && in_table(FLAG_OPTIONS, arg, len)) {
            i += 1;
        } else {
            return 0;
        }
    }
    return 0;
}

/* PYTHONPATH=boot[:theirs] and GYROSCOPE_BRIDGE=gate\x1d<fd> over a copy of the environment. */
static char **program_env(int gate_fd) {
    size_t n = 0;
    while (environ[n])
        n++;
    char **env = calloc(n + 3, sizeof(char *));
    if (!env)
        return NULL;
    const char *theirs = getenv("PYTHONPATH");
    size_t k = 0;
    for (size_t j = 0; j < n; j++)
        if (strncmp(environ[j], "PYTHONPATH=", 11) != 0 && strncmp(environ[j], "GYROSCOPE_BRIDGE=", 17) != 0)
            env[k++] = environ[j];
    size_t size = strlen(GYROSCOPE_BOOT) + (theirs && *theirs ? strlen(theirs) : 0) + 16;
    char *path = malloc(size);
    char *bridge = malloc(64);
    if (!path || !bridge)
        return NULL;
    if (theirs && *theirs)
        snprintf(path, size, "PYTHONPATH=%s:%s", GYROSCOPE_BOOT, theirs);
    else
        snprintf(path, size, "PYTHONPATH=%s", GYROSCOPE_BOOT);
    snprintf(bridge, 64, "GYROSCOPE_BRIDGE=gate\x1d%d", gate_fd);
    env[k++] = path;
    env[k++] = bridge;
    env[k] = NULL;
    return env;
}

/* Starts the program behind a gate; sets GYROSCOPE_LAUNCHED for gyroscope's python and *gate_fd
   to the gate's write end. Returns 0 when nothing was started (gyroscope's python will start it). */
static pid_t launch(int argc, char **argv, int start, int *gate_fd) {
    int held = 0, held_fds[3], n_held = 0;
    struct stat st;
    for (int fd = 0; fd < 3; fd++) {   /* agent/launch.py _hold_closed_std_fds */
        if (fstat(fd, &st) == 0)
            continue;
        int got = open("/dev/null", O_RDWR);
        if (got != fd) {
            if (got >= 0)
                close(got);
            break;
        }
        held |= 1 << fd;
        held_fds[n_held++] = fd;
    }
    int gate[2] = {-1, -1};
    char **env = NULL, **pargv = NULL;
    posix_spawn_file_actions_t actions;
    if (pipe2(gate, O_CLOEXEC) != 0)
        goto give_up;
    env = program_env(gate[0]);
    pargv = calloc((size_t)(argc - start) + 2, sizeof(char *));
    if (!env || !pargv || posix_spawn_file_actions_init(&actions) != 0)
        goto give_up;
    pargv[0] = GYROSCOPE_PYTHON;
    for (int i = start; i < argc; i++)
        pargv[i - start + 1] = argv[i];
    posix_spawn_file_actions_adddup2(&actions, gate[0], gate[0]);   /* clears close-on-exec there */
    for (int j = 0; j < n_held; j++)
        posix_spawn_file_actions_addclose(&actions, held_fds[j]);
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    pid_t pid;
    int rc = posix_spawn(&pid, GYROSCOPE_PYTHON, &actions, NULL, pargv, env);
    posix_spawn_file_actions_destroy(&actions);
    if (rc != 0)
        goto give_up;
    close(gate[0]);
    fcntl(gate[1], F_SETFD, 0);   /* gyroscope's python keeps the gate's write end */
    char value[160];
    snprintf(value, sizeof value, "%d,%d,%lld,%d,%d", (int)pid, gate[1],
             (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec, start - 1, held);
    setenv("GYROSCOPE_LAUNCHED", value, 1);
    *gate_fd = gate[1];
    return pid;

give_up:   /* as if never tried: gyroscope's python finds the descriptors as they were */
    for (int j = 0; j < 2; j++)
        if (gate[j] >= 0)
            close(gate[j]);
    for (int j = 0; j < n_held; j++)
        close(held_fds[j]);
    return 0;
}

int main(int argc, char **argv) {
    pid_t pid = 0;
    int gate_fd = -1;
    unsetenv("GYROSCOPE_LAUNCHED");   /* only ever this launcher's word */
    if (argc > 2 && strcmp(argv[1], "run") == 0) {
        int start = program_start(argc, argv);
        if (start)
            pid = launch(argc, argv, start, &gate_fd);
    }
    char **args = calloc((size_t)argc + 3, sizeof(char *));
    if (args) {
        args[0] = GYROSCOPE_PYTHON;
        args[1] = "-S";
        args[2] = GYROSCOPE_ENTRY;
        for (int i = 1; i < argc; i++)
            args[i + 2] = argv[i];
        execv(GYROSCOPE_PYTHON, args);
    }
    fprintf(stderr, "gyroscope: error: cannot start %s: %s\n", GYROSCOPE_PYTHON, strerror(errno));
    if (pid) {   /* the program leaves at its closed gate, before its first line */
        close(gate_fd);
        waitpid(pid, NULL, 0);
    }
    return 2;
}
